"""Integration test of `sightline train` on the tiny preset:
  - Karpathy JSON, TSV and webdataset shards written by Python's tarfile
    (PAX format) all train; a broken image is skipped and counted (exit 3);
  - --stop-after + --resume through the command line ends bit-identical to
    a straight run (model.safetensors and trainer_state.safetensors);
  - checkpoints: step-N/ in the Hugging Face layout with the tokenizer, the
    `latest` pointer, --keep pruning (also of the checkpoint a run resumed
    from, whose tokenizer later checkpoints still carry); `sightline encode
    --model out/step-N` embeds with the trained model;
  - train_log.jsonl has step, loss, lr, grad_norm, samples_per_s, and the
    retrieval recalls with --eval-every;
  - --init from a checkpoint, a preset naming its tokenizer directory;
  - usage errors exit 2; a corrupt shard fails naming the shard and member;
  - --device: bogus is a usage error naming it; cuda:0 where `sightline info`
    reports no CUDA device fails (exit 1) naming cuda:0 before --out is
    created; cpu logs the same losses as no --device; --dist-file needs a
    CUDA device; a rank of a group (SL_RANK / SL_WORLD_SIZE) that cannot
    run fails naming its rank (and device, or the missing CUDA support);
  - the dense objective (dense_weight, dense_beta in the preset): logged as
    loss_dense, changes the loss, kept by a resume, out-of-range refused.
usage: train_cli_test.py SIGHTLINE PRESET_JSON WORK_DIR"""
import io
import json
import os
import re
import shutil
import sys
import tarfile

import numpy as np
from PIL import Image

SL, PRESET, WORK = sys.argv[1:4]
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference"))
import cli_harness  # noqa: E402
from cli_harness import check, run  # noqa: E402

cli_harness.init(SL)

shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
W = lambda *p: os.path.join(WORK, *p)  # noqa: E731
WORDS = "red blue green cat dog tree house car bird fish sky road boat horse chair lamp".split()


def image(i):
    rng = np.random.default_rng(i)
    a = np.zeros((36 + i % 5 * 3, 44 + i % 7 * 2, 3), np.uint8)
    a[...] = rng.integers(0, 256, 3)
    for _ in range(5):
        y, x = rng.integers(0, 28), rng.integers(0, 36)
        a[y:y + 8, x:x + 8] = rng.integers(0, 256, 3)
    return Image.fromarray(a)


def caption(i, k=0):
    return f"a {WORDS[i % 16]} {WORDS[(i // 16 + 3 + k) % 16]} number {i}"


os.makedirs(W("imgs"))
N = 40
images = []
with open(W("caps.txt"), "w") as caps, open(W("pairs.tsv"), "w") as tsv:
    for i in range(N):
        image(i).save(W("imgs", f"{i}.png"))
        s = [caption(i), caption(i, 1)]
        caps.write("\n".join(s) + "\n")
        tsv.write(f"{i}.png\t{s[0]}\n")
        images.append({"filename": f"{i}.png", "split": "train" if i < 32 else "test",
                       "sentences": [{"raw": c} for c in s]})
with open(W("k.json"), "w") as f:
    json.dump({"images": images}, f)
run("tokenizer", "train", "--captions", W("caps.txt"), "--out", W("tok"), "--vocab-size", "600",
    "--quiet", rc=0)
common = ["--config", PRESET, "--tokenizer", W("tok"), "--images", W("imgs"), "--quiet"]

# straight run vs stop + resume (augmentation and shuffling on)
run("train", *common, "--data", W("pairs.tsv"), "--out", W("a"), "--steps", "8", "--batch", "12",
    "--warmup", "2", "--seed", "3", "--threads", "2", rc=0)
run("train", *common, "--data", W("pairs.tsv"), "--out", W("b"), "--steps", "8", "--batch", "12",
    "--warmup", "2", "--seed", "3", "--threads", "1", "--stop-after", "5", rc=0)
check(open(W("b", "latest")).read() == "step-5\n", "latest after stop")
run("train", "--resume", W("b"), "--data", W("pairs.tsv"), "--images", W("imgs"), "--quiet",
    "--threads", "3", rc=0)
for name in ("model.safetensors", "trainer_state.safetensors"):
    same = open(W("a", "step-8", name), "rb").read() == open(W("b", "step-8", name), "rb").read()
    check(same, f"resumed {name} differs from the straight run's")
for name in ("config.json", "preprocessor_config.json", "vocab.json", "merges.txt"):
    check(os.path.exists(W("a", "step-8", name)), f"step-8/{name} missing")
log = [json.loads(line) for line in open(W("b", "train_log.jsonl"))]
check([e["step"] for e in log] == list(range(1, 9)), "log steps")
check(all({"loss", "lr", "grad_norm", "samples_per_s"} <= set(e) for e in log), "log fields")
check(log == [dict(e, samples_per_s=log[i]["samples_per_s"])
              for i, e in enumerate(json.loads(x) for x in open(W("a", "train_log.jsonl")))],
      "resumed log differs")

# a resumed run whose checkpoint is pruned under it (--keep 1, a save every
# step) still writes its tokenizer into every later checkpoint
run("train", *common, "--data", W("pairs.tsv"), "--out", W("p"), "--steps", "6", "--batch", "12",
    "--warmup", "2", "--stop-after", "2", rc=0)
run("train", "--resume", W("p", "step-2"), "--data", W("pairs.tsv"), "--images", W("imgs"),
    "--quiet", "--save-every", "1", "--keep", "1", rc=0)
check(sorted(d for d in os.listdir(W("p")) if d.startswith("step-")) == ["step-6"],
      f"keep 1 after a resume: {os.listdir(W('p'))}")
for name in ("vocab.json", "merges.txt"):
    check(open(W("p", "step-6", name), "rb").read() == open(W("tok", name), "rb").read(),
          f"step-6/{name} differs from the tokenizer's")

# encode with the trained model
r = run("encode", "--model", W("a", "step-8"), "--texts", W("caps.txt"), "--out", W("e.npy"),
        "--quiet", rc=0)
check(os.path.exists(W("e.npy")) and np.load(W("e.npy")).shape == (2 * N, 64), "encode output")

# Karpathy + eval + keep + a broken image (exit 3)
with open(W("imgs", "broken.png"), "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\nnot really")
images.append({"filename": "broken.png", "split": "train", "sentences": [{"raw": "broken"}]})
with open(W("k2.json"), "w") as f:
    json.dump({"images": images}, f)
r = run("train", *common, "--data", W("k2.json"), "--out", W("k"), "--steps", "6", "--batch", "16",
        "--save-every", "2", "--keep", "2", "--eval-every", "3", "--eval-data", W("k2.json"),
        "--no-augment", rc=3)
check("broken.png" in r.stderr, "broken image not named")
check(sorted(d for d in os.listdir(W("k")) if d.startswith("step-")) == ["step-4", "step-6"],
      f"keep 2: {os.listdir(W('k'))}")
log = [json.loads(line) for line in open(W("k", "train_log.jsonl"))]
check(all("i2t_r1" in e and "t2i_r10" in e for e in log if e["step"] % 3 == 0) and
      "i2t_r1" not in log[0], "eval fields")

# webdataset shards from Python's tarfile (PAX)
os.makedirs(W("shards"))
for s in range(2):
    with tarfile.open(W("shards", f"{s:05d}.tar"), "w", format=tarfile.PAX_FORMAT) as t:
        for i in range(s * 20, s * 20 + 20):
            for ext, data in (("png", None), ("txt", caption(i).encode())):
                if data is None:
                    b = io.BytesIO()
                    image(i).save(b, format="PNG")
                    data = b.getvalue()
                ti = tarfile.TarInfo(f"train/{i:06d}.{ext}")
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
run("train", *common, "--data", W("shards"), "--out", W("w"), "--steps", "3", "--batch", "16",
    rc=0)
check(os.path.exists(W("w", "step-3", "model.safetensors")), "tar run checkpoint")
raw = bytearray(open(W("shards", "00001.tar"), "rb").read())
with open(W("bad.tar"), "wb") as f:
    cut = raw.find(b"train/000021.png")
    check(cut > 0 and cut % 512 == 0, "member header not found")
    f.write(raw[:cut + 512 + 50])
r = run("train", *common, "--data", W("bad.tar"), "--out", W("bad"), "--steps", "1", rc=1)
check("bad.tar" in r.stderr and "000021.png" in r.stderr and "truncated" in r.stderr,
      f"truncated shard message: {r.stderr}")

# --init from a checkpoint (its tokenizer), and a preset naming its tokenizer
run("train", "--init", W("a", "step-8"), "--data", W("pairs.tsv"), "--images", W("imgs"),
    "--out", W("i"), "--steps", "2", "--batch", "8", "--quiet", rc=0)
check(os.path.exists(W("i", "step-2", "vocab.json")), "--init run checkpoint")
cfg = json.load(open(PRESET))
cfg["tokenizer"] = "tok"  # relative to the preset's directory
with open(W("preset.json"), "w") as f:
    json.dump(cfg, f)
run("train", "--config", W("preset.json"), "--data", W("pairs.tsv"), "--images", W("imgs"),
    "--out", W("t"), "--steps", "1", "--batch", "8", "--quiet", rc=0)
check(os.path.exists(W("t", "step-1", "merges.txt")), "preset tokenizer run")

# usage
run("train", "--data", W("pairs.tsv"), rc=2)
run("train", *common, "--data", W("pairs.tsv"), "--out", W("u"), "--batch", "0", rc=2)
run("train", *common, "--data", W("pairs.tsv"), "--out", W("u"), "--eval-every", "2", rc=2)

# --device
short = [*common, "--data", W("pairs.tsv"), "--steps", "3", "--batch", "8", "--seed", "5"]
r = run("train", *short, "--out", W("dv_bogus"), "--device", "bogus", rc=2)
check("bogus" in r.stderr, f"--device bogus not named: {r.stderr!r}")
check(not os.path.exists(W("dv_bogus")), "--device bogus created --out")
m = re.search(r"CUDA devices: (\d+)", run("info", rc=0).stdout)
if m is not None and int(m.group(1)) == 0:
    r = run("train", *short, "--out", W("dv_cuda"), "--device", "cuda:0", rc=1)
    check("cuda:0" in r.stderr, f"--device cuda:0 failure not named: {r.stderr!r}")
    check(not os.path.exists(W("dv_cuda")) or not os.listdir(W("dv_cuda")),
          "--device cuda:0 wrote to --out")
else:
    print("note: this machine reports CUDA devices: the cuda:0 failure check is skipped")
# data parallelism: an id file without a GPU device is refused; a rank of a
# group whose device cannot be used fails naming it, before --out exists
r = run("train", *short, "--out", W("dv_dist"), "--device", "cpu", "--dist-file", W("id"), rc=1)
check("--dist-file" in r.stderr, f"--dist-file with cpu not refused by name: {r.stderr!r}")
if m is not None and int(m.group(1)) == 0:
    env = dict(os.environ, SL_RANK="1", SL_WORLD_SIZE="2")
    r = run("train", *short, "--out", W("dv_dist"), "--device", "cuda", "--dist-file", W("id"),
            rc=1, env=env)
    # a CUDA build names the device; one without CUDA says it cannot form the group
    check("rank 1" in r.stderr and ("cuda:1" in r.stderr or "no CUDA support" in r.stderr),
          f"rank 1's failure not named: {r.stderr!r}")
check(not os.path.exists(W("dv_dist")), "a refused data-parallel run created --out")
run("train", *short, "--out", W("dv_none"), rc=0)
run("train", *short, "--out", W("dv_cpu"), "--device", "cpu", rc=0)
losses = [[json.loads(x)["loss"] for x in open(W(d, "train_log.jsonl"))]
          for d in ("dv_none", "dv_cpu")]
check(len(losses[0]) == 3 and losses[0] == losses[1], f"--device cpu losses differ: {losses}")

# the dense objective (config only): logged beside the total, recorded in the
# checkpoint (a resume keeps it), a different loss from the same seed without it
cfg = json.load(open(PRESET))
cfg["train"] = dict(cfg.get("train", {}), dense_weight=0.5, dense_beta=8.0)
with open(W("dense.json"), "w") as f:
    json.dump(cfg, f)
dense = ["--config", W("dense.json"), *short[2:]]
run("train", *dense, "--out", W("dn"), "--stop-after", "2", rc=0)
run("train", "--resume", W("dn", "step-2"), "--data", W("pairs.tsv"), "--images", W("imgs"),
    "--quiet", rc=0)
log = [json.loads(x) for x in open(W("dn", "train_log.jsonl"))]
check(len(log) == 3 and all("loss_dense" in e and e["loss_dense"] > 0 for e in log),
      f"dense runs log loss_dense: {log}")
check(all(abs(a["loss"] - b) > 1e-3 for a, b in zip(log, losses[0])),
      f"the dense objective leaves the loss unchanged: {log} vs {losses[0]}")
with open(W("dn", "step-3", "trainer_state.safetensors"), "rb") as f:
    n = int.from_bytes(f.read(8), "little")
    meta = json.loads(f.read(n)).get("__metadata__", {})
tc = json.loads(meta.get("train_config", "{}"))
check(tc.get("dense_weight") == 0.5 and tc.get("dense_beta") == 8.0,
      f"checkpoint's train_config lacks the dense objective: {tc}")
cfg["train"]["dense_weight"] = -1
with open(W("dense_bad.json"), "w") as f:
    json.dump(cfg, f)
r = run("train", "--config", W("dense_bad.json"), *short[2:], "--out", W("dn_bad"), rc=1)
check("dense_weight" in r.stderr, f"a negative dense_weight not named: {r.stderr!r}")
cfg["train"].update(dense_weight=0.5, dense_beta=0)
with open(W("dense_bad.json"), "w") as f:
    json.dump(cfg, f)
r = run("train", "--config", W("dense_bad.json"), *short[2:], "--out", W("dn_bad"), rc=1)
check("dense_beta" in r.stderr, f"a zero dense_beta not named: {r.stderr!r}")

sys.exit(cli_harness.finish("train_cli"))
