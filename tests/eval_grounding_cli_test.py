"""Integration test of `sightline eval grounding` driven as a user would: a
random-weight CLIP model (tests/reference/clip_ref.py, with a byte-level
tokenizer from clip_tokenizer_ref.py), generated JPEGs, Flickr30K Entities
files (Sentences/, Annotations/, split lists) and a RefCOCO COCO-style JSON.

The ground truth is built from an independent numpy recomputation of the
predicted boxes (from `sightline encode --patches` and `encode --texts`
outputs, with the box rule of sl_ground_box written again here): about a
third of the phrases get their predicted box (one box, or two whose union it
is), the others a box far away, plus phrases without boxes (nobndbox, scene,
notvisual, not annotated). Checks: the JSON's structure and counts, the
accuracy and per-type accuracy, exact per-phrase agreement of correct /
incorrect (--details) with the recomputation, --contrast's boxes against
the same rule on the contrasted maps, the same through an index
built with --region (patches stored as float16), --skip-bad (exit 3) and a
corrupt image without it (exit 1, named), a malformed sentence file (exit 1,
file and line named).

usage: eval_grounding_cli_test.py SIGHTLINE REFERENCE_DIR WORK_DIR
(exit 77 = skipped: the binary has no `eval` command yet)"""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image, ImageDraw

SL, REF, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
PY = "/usr/bin/python3"
sys.path.insert(0, REF)
import cli_harness  # noqa: E402
import ground_ref  # noqa: E402
from cli_harness import check, run  # noqa: E402

cli_harness.init(SL)

probe = subprocess.run([SL, "eval", "grounding", "--help"], capture_output=True, text=True)
if probe.returncode != 0:
    print("SKIP: this sightline has no `eval grounding` command")
    sys.exit(77)

shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)

# ---------------------------------------------------------------------------
# model: clip_ref's random weights, a vocabulary of the 512 byte symbols and
# the two special tokens (so every text tokenizes), pooled at the largest id
# ---------------------------------------------------------------------------
import clip_ref  # noqa: E402

cfg = clip_ref.Config(v_width=64, v_layers=2, v_heads=2, v_mlp=128, t_width=64, t_layers=2,
                      t_heads=2, t_mlp=128, image_size=64, patch=8, ctx=32, vocab=514, embed=32,
                      act="quick_gelu", eos=513, pool_argmax=True)
model = os.path.join(WORK, "model")
os.makedirs(model)
params = clip_ref.random_params(cfg, 1234)
clip_ref.st_write(os.path.join(model, "model.safetensors"), clip_ref.hf_names(cfg, params), "F32",
                  {"format": "pt"})
with open(os.path.join(model, "config.json"), "w") as f:
    json.dump(clip_ref.hf_config(cfg), f, indent=1)
with open(os.path.join(WORK, "captions.txt"), "w") as f:
    f.write("a\n")
subprocess.run([PY, os.path.join(REF, "clip_tokenizer_ref.py"), "--train",
                os.path.join(WORK, "captions.txt"), "514", "1", model], check=True)
S, G = cfg.image_size, cfg.image_size // cfg.patch

# ---------------------------------------------------------------------------
# images (JPEG; short sides below 2 * S so no DCT scaling applies)
# ---------------------------------------------------------------------------
imgdir = os.path.join(WORK, "images")
os.makedirs(imgdir)
rng = np.random.default_rng(7)
sizes = {"1001": (96, 64), "1002": (64, 112), "1003": (80, 80), "1004": (120, 70)}
for k, (w, h) in sizes.items():
    im = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 255, 3)))
    d = ImageDraw.Draw(im)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, w - 10)), int(rng.integers(0, h - 10))
        d.rectangle([x0, y0, x0 + int(rng.integers(5, w // 2)), y0 + int(rng.integers(5, h // 2))],
                    fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    im.save(os.path.join(imgdir, k + ".jpg"), quality=95)
with open(os.path.join(imgdir, "1009.jpg"), "wb") as f:
    f.write(b"\xff\xd8\xff\xe0 this is not a jpeg")
ids = list(sizes)

# phrases per image: (entity, types, words)
WORDS = ["a man", "the red shirt", "two dogs", "a wooden fence", "her left hand", "a small boat",
         "the guitar", "green grass", "a tall building", "the blue sky", "an old car", "a child"]
TYPES = ["people", "clothing", "animals", "other", "bodyparts", "vehicles", "instruments",
         "clothing/other", "people/other"]
phr = {}
n = 0
for k in ids:
    lst = []
    for j in range(5):
        lst.append((str(100 + n), TYPES[n % len(TYPES)], WORDS[n % len(WORDS)] + f" {n}"))
        n += 1
    phr[k] = lst

# ---------------------------------------------------------------------------
# the recomputation: encode outputs -> normalised patches, texts -> boxes
# ---------------------------------------------------------------------------
with open(os.path.join(WORK, "list.txt"), "w") as f:
    for k in ids:
        f.write(os.path.join(imgdir, k + ".jpg") + "\n")
texts = sorted({w for k in ids for (_, _, w) in phr[k]} |
               {f"ref expression {i}" for i in range(6)} |
               {"something", "the street", "someone", "a ghost"})
with open(os.path.join(WORK, "texts.txt"), "w") as f:
    f.write("\n".join(texts) + "\n")
run("encode", "--model", model, "--images", os.path.join(WORK, "list.txt"), "--out",
    os.path.join(WORK, "img.npy"), "--patches", os.path.join(WORK, "pat.npy"), "--quiet", rc=0)
run("encode", "--model", model, "--texts", os.path.join(WORK, "texts.txt"), "--out",
    os.path.join(WORK, "txt.npy"), "--quiet", rc=0)
pat = np.load(os.path.join(WORK, "pat.npy")).astype(np.float64)
pat /= np.linalg.norm(pat, axis=2, keepdims=True)
txt = np.load(os.path.join(WORK, "txt.npy")).astype(np.float64)
check(pat.shape == (len(ids), G * G, cfg.embed), f"patches shape {pat.shape}")
temb = {t: txt[i] for i, t in enumerate(texts)}
patches = {k: pat[i] for i, k in enumerate(ids)}
patches16 = {k: pat[i].astype(np.float16).astype(np.float64) for i, k in enumerate(ids)}


def ground(sim, w, h, rel=ground_ref.REL_DEFAULT, up=ground_ref.UPSAMPLE_DEFAULT, base=np.mean):
    """The box rule (ground_ref.box): the box and how near it was to a tie."""
    return ground_ref.box(sim, w, h, S, rel, up, base)[:2]


def iou(a, b):
    aw, ah, bw, bh = a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1]
    if not (aw > 0 and ah > 0 and bw > 0 and bh > 0):
        return 0.0
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    return iw * ih / (aw * ah + bw * bh - iw * ih)


def predict(k, text, table):
    w, h = sizes[k]
    return ground(table[k] @ temb[text], w, h)


# ---------------------------------------------------------------------------
# Flickr30K Entities files
# ---------------------------------------------------------------------------
ent = os.path.join(WORK, "entities")
os.makedirs(os.path.join(ent, "Sentences"))
os.makedirs(os.path.join(ent, "Annotations"))
expect = {}  # (image file, line, entity, phrase) -> ground-truth box (0-based, exclusive)
types_of = {}


def voc(b):
    """A 0-based exclusive integer box in VOC form (1-based inclusive)."""
    return (b[0] + 1, b[1] + 1, b[2], b[3])


for k in ids:
    w, h = sizes[k]
    objs, lines = [], []
    for n_, (e, ty, words) in enumerate(phr[k]):
        b, _ = predict(k, words, patches)
        ib = [int(round(v)) for v in b]
        ib = [min(max(ib[0], 0), w - 1), min(max(ib[1], 0), h - 1), max(ib[2], 1), max(ib[3], 1)]
        ib = [ib[0], ib[1], max(ib[2], ib[0] + 1), max(ib[3], ib[1] + 1)]
        kind = (int(e) + len(k)) % 3
        if kind == 0:  # the predicted box, rounded
            boxes = [ib]
        elif kind == 1:  # two boxes whose union is the predicted box
            mx = (ib[0] + ib[2]) // 2
            boxes = [[ib[0], ib[1], max(mx, ib[0] + 1), ib[3]], [mx, ib[1], ib[2], ib[3]]]
        else:  # far away: the opposite corner, small
            cx = 0 if (ib[0] + ib[2]) / 2 > w / 2 else w - 4
            cy = 0 if (ib[1] + ib[3]) / 2 > h / 2 else h - 4
            boxes = [[cx, cy, cx + 4, cy + 4]]
        for bb in boxes:
            x0, y0, x1, y1 = voc(bb)
            objs.append(f"<object>\n<name>{e}</name>\n<bndbox>\n<xmin>{x0}</xmin>\n<ymin>{y0}"
                        f"</ymin>\n<xmax>{x1}</xmax>\n<ymax>{y1}</ymax>\n</bndbox>\n</object>")
        u = [min(b_[0] for b_ in boxes), min(b_[1] for b_ in boxes),
             max(b_[2] for b_ in boxes), max(b_[3] for b_ in boxes)]
        line = n_ // 2 + 1
        expect[(k + ".jpg", line, e, words)] = tuple(float(v) for v in u)
        types_of[(k + ".jpg", line, e, words)] = ty.split("/")
        while len(lines) < line:
            lines.append([])
        lines[line - 1].append(f"[/EN#{e}/{ty} {words}]")
    # phrases without boxes: one per reason
    objs.append(f"<object>\n<name>9{k}1</name>\n<nobndbox>1</nobndbox>\n<scene>0</scene>\n</object>")
    objs.append(f"<object>\n<name>9{k}2</name>\n<nobndbox>0</nobndbox>\n<scene>1</scene>\n</object>")
    # the nobndbox phrase shares the first sentence (a --contrast rival all the same)
    lines[0].append(f"[/EN#9{k}1/other something]")
    lines.append([f"[/EN#9{k}2/scene the street]", "[/EN#0/notvisual someone]",
                  f"[/EN#8{k}/animals a ghost]"])
    with open(os.path.join(ent, "Sentences", k + ".txt"), "w") as f:
        for ln in lines:
            f.write("Here " + " and ".join(ln) + " .\n")
    with open(os.path.join(ent, "Annotations", k + ".xml"), "w") as f:
        f.write(f"<annotation>\n<filename>{k}.jpg</filename>\n<size>\n<width>{w}</width>\n"
                f"<height>{h}</height>\n<depth>3</depth>\n</size>\n" + "\n".join(objs) +
                "\n</annotation>\n")
split = os.path.join(ent, "test.txt")
with open(split, "w") as f:
    f.write("\n".join(ids[:3]) + "\n")  # 1004 left out by the split
shutil.copy(os.path.join(ent, "Sentences", "1001.txt"), os.path.join(ent, "Sentences", "1009.txt"))
shutil.copy(os.path.join(ent, "Annotations", "1001.xml"),
            os.path.join(ent, "Annotations", "1009.xml"))
with open(os.path.join(ent, "bad.txt"), "w") as f:
    f.write("1001\n1009\n1002\n")


def recompute(keys, table):
    """Per key: (correct, margin) from the recomputation."""
    out = {}
    for key in keys:
        img, _, _, words = key
        k = img[:-4] if img.endswith(".jpg") and img[:-4] in sizes else refimg[img]
        b, margin = predict(k, words, table)
        v = iou(b, expect[key])
        out[key] = (v >= 0.5, min(margin, abs(v - 0.5)))
    return out


def compare(details_path, keys, table, what):
    with open(details_path) as f:
        got = [json.loads(line) for line in f]
    got = {(d["image"], d["line"], d["entity"], d["phrase"]): d for d in got}
    check(set(got) == set(keys), f"{what}: details keys differ: {set(got) ^ set(keys)}")
    rec = recompute(keys, table)
    ambiguous = 0
    for key in keys:
        if key not in got:
            continue
        ok, margin = rec[key]
        d = got[key]
        check(tuple(d["gt"]) == expect[key], f"{what}: gt of {key}: {d['gt']} vs {expect[key]}")
        if margin < 1e-5:
            ambiguous += 1
            continue
        check(d["correct"] == ok, f"{what}: {key}: sightline says {d['correct']}, numpy {ok}")
    check(ambiguous <= 1, f"{what}: {ambiguous} near-tie phrases")
    return rec


def check_summary(res, keys, rec, what, skipped, images):
    for field in ("accuracy", "per_type", "phrases", "skipped", "skipped_by", "images",
                  "images_failed", "correct"):
        check(field in res, f"{what}: JSON lacks {field}")
    correct = sum(1 for key in keys if rec[key][0])
    check(res["phrases"] == len(keys), f"{what}: phrases {res['phrases']} vs {len(keys)}")
    check(res["correct"] == correct, f"{what}: correct {res['correct']} vs {correct}")
    check(abs(res["accuracy"] - 100.0 * correct / len(keys)) < 1e-6,
          f"{what}: accuracy {res['accuracy']} vs {100.0 * correct / len(keys)}")
    check(res["skipped"] == sum(skipped.values()), f"{what}: skipped {res['skipped']}")
    for r, nr in skipped.items():
        check(res["skipped_by"].get(r) == nr, f"{what}: skipped_by[{r}] {res['skipped_by']}")
    check(res["images"] == images, f"{what}: images {res['images']}")
    return correct


# ---- Entities through the images ---------------------------------------------
out_json = os.path.join(WORK, "ent.json")
out_det = os.path.join(WORK, "ent.jsonl")
p = run("eval", "grounding", "--model", model, "--entities", ent, "--images", imgdir, "--split",
        split, "--json", out_json, "--details", out_det, "--batch", "2", "--threads", "2",
        "--quiet", rc=0)
print(p.stdout)
keys = [key for key in expect if key[0][:-4] in ids[:3]]
res = json.load(open(out_json))
rec = compare(out_det, keys, patches, "entities")
check(res.get("rel") == 0.4 and res.get("rel_from") == "mean" and res.get("upsample") == 2 and
      res.get("contrast") is False, f"entities: the JSON's box rule {res}")
correct = check_summary(res, keys, rec, "entities",
                        {"nobndbox": 3, "scene": 3, "notvisual": 3, "absent": 3}, 3)
check(0 < correct < len(keys), f"entities: {correct} of {len(keys)} correct (want a mix)")
per = {}
for key in keys:
    for t in types_of[key]:
        n_, c_ = per.get(t, (0, 0))
        per[t] = (n_ + 1, c_ + rec[key][0])
check(set(res["per_type"]) == set(per), f"per_type keys {sorted(res['per_type'])} vs {sorted(per)}")
for t, (n_, c_) in per.items():
    got = res["per_type"].get(t, {})
    check(got.get("phrases") == n_ and abs(got.get("accuracy", -1) - 100.0 * c_ / n_) < 1e-6,
          f"per_type[{t}] {got} vs {n_} phrases, {c_} correct")
check("all" in p.stdout and "people" in p.stdout, "the table lists types and all")

def check_boxes(what, flags, box_of):
    """Run eval grounding with `flags`; every phrase's box (but near ties)
    must be box_of(key)'s, and some must differ from the default rule's."""
    out_det = os.path.join(WORK, f"ent_{what.strip('-').replace(' ', '_')}.jsonl")
    out_json = out_det[:-1]
    run("eval", "grounding", "--model", model, "--entities", ent, "--images", imgdir, "--split",
        split, "--details", out_det, "--json", out_json, "--quiet", *flags, rc=0)
    got = {(d["image"], d["line"], d["entity"], d["phrase"]): d
           for d in map(json.loads, open(out_det))}
    check(set(got) == set(keys), f"{what}: the same phrases are judged")
    moved = checked = 0
    for key in keys:
        b, margin = box_of(key)
        if margin < 1e-5:  # float32 against float64: too near a tie to judge
            continue
        checked += 1
        moved += tuple(b) != tuple(predict(key[0][:-4], key[3], patches)[0])
        check(np.allclose(got[key]["box"], b, atol=1e-3),
              f"{what}: {key}: box {got[key]['box']} vs numpy {b}")
    check(checked >= len(keys) - 2 and moved > 0,
          f"{what}: {checked} of {len(keys)} phrases checked, {moved} boxes moved (want some)")
    return json.load(open(out_json))


# ---- --contrast: each phrase's map minus the largest of its sentence's other phrases' ----
# (every phrase the sentence marks, boxed or not: read back from the Sentences files here)
marked = {}
for k in ids[:3]:
    with open(os.path.join(ent, "Sentences", k + ".txt")) as f:
        for ln, text in enumerate(f, 1):
            marked[(k, ln)] = re.findall(r"\[/EN#\S+/\S+ ([^\]]*)\]", text)


def contrasted(key, pool=np.mean, weight=0.75):  # the defaults: mean, 0.75
    img, line, _, words = key
    k = img[:-4]
    others = [o for o in marked[(k, line)] if o != words]
    sim = patches[k] @ temb[words]
    if others:
        sim = sim - weight * pool([patches[k] @ temb[o] for o in others], axis=0)
    return ground(sim, *sizes[k])


res = check_boxes("--contrast", ["--contrast"], contrasted)
check(res.get("contrast") is True and res.get("contrast_pool") == "mean" and
      res.get("contrast_weight") == 0.75, f"--contrast: the JSON says so: {res}")
res = check_boxes("--contrast max 1", ["--contrast", "--contrast-pool", "max", "--contrast-weight",
                                       "1"], lambda key: contrasted(key, np.max, 1.0))
check(res.get("contrast_pool") == "max" and res.get("contrast_weight") == 1,
      "--contrast-pool max --contrast-weight 1: the JSON says so")
for bad in (["--contrast", "--contrast-pool", "median"], ["--contrast", "--contrast-weight", "-1"],
            ["--contrast-weight", "1"]):
    run("eval", "grounding", "--model", model, "--entities", ent, "--images", imgdir, *bad, rc=2)

# ---- --upsample: the boxes of the map upsampled 1 (the patch grid) and 3 times ----
for up in (1, 3):
    res = check_boxes(f"--upsample {up}", ["--upsample", str(up)],
                      lambda key: ground(patches[key[0][:-4]] @ temb[key[3]], *sizes[key[0][:-4]],
                                         up=up))
    check(res.get("upsample") == up, f"--upsample {up}: the JSON says so")
res = check_boxes("--rel-from min", ["--rel-from", "min", "--rel", "0.75"],
                  lambda key: ground(patches[key[0][:-4]] @ temb[key[3]], *sizes[key[0][:-4]],
                                     rel=0.75, base=np.min))
check(res.get("rel_from") == "min" and res.get("rel") == 0.75, "--rel-from min: the JSON says so")
for bad in (["--upsample", "0"], ["--upsample", "17"], ["--upsample", "2.5"],
            ["--rel-from", "max"], ["--rel", "1.5"]):
    run("eval", "grounding", "--model", model, "--entities", ent, "--images", imgdir, *bad, rc=2)

# ---- RefCOCO through the images --------------------------------------------------
refimg = {}
images, anns = [], []
order = [("1002", 0), ("1001", 1), ("1002", 2), ("1003", 3), ("1001", 4), ("1004", 5)]
for eid, (k, i) in enumerate(order):
    fname = f"{k}.jpg"
    refimg[fname] = k
    w, h = sizes[k]
    words = f"ref expression {i}"
    b, _ = predict(k, words, patches)
    if i % 2 == 0:
        bb = [b[0] + 0.25, b[1], b[2] - b[0] - 0.5, b[3] - b[1]]
    else:
        bb = [0.0, 0.0, 3.5, 2.0] if b[0] > w / 3 else [w - 3.5, h - 2.0, 3.5, 2.0]
    iid = 500 + eid
    images.append({"id": iid, "file_name": fname, "height": h, "width": w, "caption": words,
                   "original_id": int(k), "dataset_name": "refcoco",
                   "tokens_positive_eval": [[[0, len(words)]]]})
    if i != 5:  # the last expression has no annotation: skipped
        anns.append({"id": eid, "image_id": iid, "bbox": bb, "category_id": 1, "iscrowd": 0,
                     "tokens_positive": [[0, len(words)]]})
        expect[(fname, eid, str(iid), words)] = tuple(
            float(np.float32(v)) for v in (bb[0], bb[1], bb[0] + bb[2], bb[1] + bb[3]))
ref = os.path.join(WORK, "refcoco_val.json")
with open(ref, "w") as f:
    json.dump({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "x"}]}, f,
              indent=1)
out_json = os.path.join(WORK, "ref.json")
out_det = os.path.join(WORK, "ref.jsonl")
run("eval", "grounding", "--model", model, "--refcoco", ref, "--images", imgdir, "--json",
    out_json, "--details", out_det, "--quiet", rc=0)
rkeys = [key for key in expect if isinstance(key[1], int) and key[2].startswith("50")]
res = json.load(open(out_json))
rrec = compare(out_det, rkeys, patches, "refcoco")
check_summary(res, rkeys, rrec, "refcoco", {"absent": 1}, 3)
check(res["per_type"] == {}, "refcoco has no types")

# ---- the same through an index built with --region -----------------------------------
idx = os.path.join(WORK, "index")
run("index", "build", "--model", model, "--index", idx, "--images", imgdir, "--region", "--quiet")
out_json = os.path.join(WORK, "ent_idx.json")
out_det = os.path.join(WORK, "ent_idx.jsonl")
run("eval", "grounding", "--model", model, "--entities", ent, "--images", imgdir, "--split", split,
    "--index", idx, "--json", out_json, "--details", out_det, "--quiet", rc=0)
res = json.load(open(out_json))
rec16 = compare(out_det, keys, patches16, "entities (index)")
check_summary(res, keys, rec16, "entities (index)",
              {"nobndbox": 3, "scene": 3, "notvisual": 3, "absent": 3}, 3)
check(res.get("source") == "index", "index run says so")
# an image the index does not hold
p = run("eval", "grounding", "--model", model, "--entities", ent, "--images", imgdir, "--split",
        os.path.join(ent, "bad.txt"), "--index", idx, "--quiet", rc=1)
check("1009.jpg" in p.stderr, f"index: failed image named: {p.stderr}")

# ---- a corrupt image: exit 1 naming it, or 3 with --skip-bad ---------------------------
p = run("eval", "grounding", "--model", model, "--entities", ent, "--images", imgdir, "--split",
        os.path.join(ent, "bad.txt"), "--quiet", rc=1)
check("1009.jpg" in p.stderr, f"failed image named: {p.stderr}")
out_json = os.path.join(WORK, "bad.json")
p = run("eval", "grounding", "--model", model, "--entities", ent, "--images", imgdir, "--split",
        os.path.join(ent, "bad.txt"), "--skip-bad", "--json", out_json, "--quiet", rc=3)
res = json.load(open(out_json))
check(res["images_failed"] == ["1009.jpg"], f"images_failed {res['images_failed']}")
check(res["images"] == 2 and res["skipped_by"]["image_failed"] == 5,
      f"skip-bad counts {res['images']} {res['skipped_by']}")

# ---- malformed inputs and usage ----------------------------------------------------------
with open(os.path.join(ent, "Sentences", "1003.txt"), "a") as f:
    f.write("A [/EN#77/people broken phrase .\n")
p = run("eval", "grounding", "--model", model, "--entities", ent, "--images", imgdir, "--split",
        split, "--quiet", rc=1)
check("Sentences/1003.txt:5" in p.stderr, f"malformed sentence named: {p.stderr}")
run("eval", "grounding", "--model", model, "--images", imgdir, rc=2)
run("eval", "grounding", "--model", model, "--refcoco", ref, "--entities", ent, "--images", imgdir,
    rc=2)
run("eval", "grounding", "--model", model, "--refcoco", ref, "--images", imgdir, "--rel", "2",
    rc=2)
p = run("eval", "grounding", "--model", model, "--refcoco", ref, "--images", imgdir, "--device",
        "bogus", rc=2)
check("bogus" in p.stderr, f"--device bogus not named: {p.stderr!r}")
run("eval", "grounding", "--model", model, "--refcoco", ref, "--images", imgdir,
    "--patch-tokens", "mean", rc=2)

sys.exit(cli_harness.finish("eval_grounding_cli"))
