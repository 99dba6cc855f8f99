"""Integration test of `sightline query`, driven as a user would: a
random-weight CLIP-shaped model (tests/reference/clip_ref.py) with a BPE
vocabulary trained by `sightline tokenizer train`, generated photos, an index
built with --region and a text side from captions. Checked against numpy
over `sightline encode` outputs of the same images and texts:
  - text -> image: same paths in the same order for the top k, scores 1e-5;
  - image -> text: same texts in the same order, scores 1e-5;
  - an empty line and an unreadable image each give an "error" line while
    the others are answered (exit 3);
  - phrase -> region (corpus-wide and image<TAB>phrase, indexed or not):
    images, scores and boxes equal a numpy recomputation of the
    similarity-map box rule (peak, threshold, 4-connected component, crop
    map), boxes inside the picture;
  - --tsv parses (6 columns, ranks, scores as in the JSON);
  - --rerank fine: the reranked top k are the best of the first max(4k, 50)
    candidates by a numpy late-interaction score (token embeddings from the
    PyTorch reference);
  - clear errors: no index, no texts, no regions, another model;
  - --html: a self-contained page, rendered in headless Chromium when it is
    installed (tests/reference/html_check.py).
usage: query_cli_test.py SIGHTLINE REFERENCE_DIR WORK_DIR"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

SL, REF, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, REF)
import clip_ref  # noqa: E402

import cli_harness  # noqa: E402
import ground_ref  # noqa: E402
from cli_harness import check, run  # noqa: E402

cli_harness.init(SL)


def jsonl(p):
    return [json.loads(line) for line in p.stdout.splitlines()]


if subprocess.run([SL, "query", "--help"], capture_output=True).returncode != 0:
    print("SKIP: this sightline has no query command yet (cli/main.c)")
    sys.exit(77)
shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)

# ---------------------------------------------------------------------------
# A model with a tokenizer: BPE trained on the captions, random weights
# ---------------------------------------------------------------------------
rng = np.random.default_rng(5)
colors = ["red", "green", "blue", "yellow", "black", "white", "orange", "purple"]
things = ["car", "dog", "cat", "house", "tree", "boat", "bird", "flower", "chair", "lamp"]
places = ["on the street", "in the park", "near the lake", "at night", "in the snow", "by a wall"]
captions = sorted({f"a {rng.choice(colors)} {rng.choice(things)} {rng.choice(places)}"
                   for _ in range(60)})
cap_file = f"{WORK}/captions.txt"
open(cap_file, "w").write("\n".join(captions) + "\n")
model = f"{WORK}/model"
run("tokenizer", "train", "--captions", cap_file, "--out", model, "--vocab-size", "600",
    "--quiet", rc=0)
V = len(json.load(open(f"{model}/vocab.json")))
cfg = clip_ref.Config(v_width=64, v_layers=2, v_heads=2, v_mlp=128, t_width=64, t_layers=2,
                      t_heads=2, t_mlp=128, image_size=64, patch=16, ctx=16, vocab=V, embed=32,
                      act="quick_gelu", eos=V - 1, pool_argmax=True)
params = clip_ref.random_params(cfg, 1234)
named = clip_ref.hf_names(cfg, params)
stored = clip_ref.st_write(f"{model}/model.safetensors", named, "F32", {"format": "pt"})
json.dump(clip_ref.hf_config(cfg), open(f"{model}/config.json", "w"), indent=1)
keys = clip_ref.hf_names(cfg, {k: k for k in params})
ref_params = {keys[n]: stored[n].double() for n in named}

# ---------------------------------------------------------------------------
# Photos (varied sizes and aspect ratios), an index with regions and texts
# ---------------------------------------------------------------------------
photos = f"{WORK}/photos"
os.makedirs(photos)
for i in range(60):
    w, h = int(rng.integers(40, 200)), int(rng.integers(40, 200))
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.random(3) * 255
    img = base + 80 * np.sin(xx[..., None] / (3 + i % 7) + rng.random(3) * 6) \
        + 30 * rng.standard_normal((h, w, 3))
    y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
    img[y0:y0 + h // 3, x0:x0 + w // 3] = rng.random(3) * 255  # a patch of flat colour
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(f"{photos}/p{i:02d}.png")
idx = f"{WORK}/idx"
run("index", "build", "--model", model, "--index", idx, "--images", photos, "--region", "--quiet",
    rc=0)
run("index", "texts", "--model", model, "--index", idx, "--texts", cap_file, "--quiet", rc=0)

# reference embeddings from `sightline encode`
run("encode", "--model", model, "--images", photos, "--out", f"{WORK}/img.npy", "--patches",
    f"{WORK}/patches.npy", "--quiet", rc=0)
img_emb = np.load(f"{WORK}/img.npy")
img_paths = open(f"{WORK}/img.npy.paths.txt").read().splitlines()
patches = np.load(f"{WORK}/patches.npy")
patches /= np.linalg.norm(patches, axis=2, keepdims=True)
stored_patches = patches.astype(np.float16).astype(np.float32)  # the index keeps float16
run("encode", "--model", model, "--texts", cap_file, "--out", f"{WORK}/cap.npy", "--quiet", rc=0)
cap_emb = np.load(f"{WORK}/cap.npy")
sizes = [Image.open(p).size for p in img_paths]
K = 5


def encode_texts(texts, name):
    open(f"{WORK}/{name}.txt", "w").write("\n".join(texts) + "\n")
    run("encode", "--model", model, "--texts", f"{WORK}/{name}.txt", "--out", f"{WORK}/{name}.npy",
        "--quiet", rc=0)
    return np.load(f"{WORK}/{name}.npy")


def same_ranking(got, want_keys, want_scores, key, what):
    keys = [r[key] for r in got]
    scores = np.array([r["score"] for r in got])
    ok = keys == list(want_keys) and np.abs(scores - want_scores).max() <= 1e-5
    check(ok, f"{what}: got {list(zip(keys, scores))} want {list(zip(want_keys, want_scores))}")


# ---------------------------------------------------------------------------
# text -> image
# ---------------------------------------------------------------------------
texts = captions[:6] + ["a purple lamp", "snow at night", "dog"]
q_emb = encode_texts(texts, "tq")
open(f"{WORK}/tq_in.txt", "w").write("\n".join(texts[:4] + [""] + texts[4:]) + "\n")
p = run("query", "--index", idx, "--text", f"{WORK}/tq_in.txt", "-k", str(K), "--batch", "4",
        "--quiet", rc=3)
out = jsonl(p)
check(len(out) == len(texts) + 1, f"one line per query ({len(out)})")
check("error" in out[4] and out[4]["query"] == "" and "results" not in out[4], "empty line error")
answered = out[:4] + out[5:]
for i, t in enumerate(texts):
    s = img_emb @ q_emb[i]
    order = np.argsort(-s, kind="stable")[:K]
    check(answered[i]["query"] == t, f"query order {answered[i]['query']!r}")
    same_ranking(answered[i]["results"], [img_paths[j] for j in order], s[order], "path",
                 f"text query {t!r}")
check(all(isinstance(r["id"], int) and r["id"] > 0 for r in answered[0]["results"]), "image ids")

# stdin, and the recorded model vs an explicit --model give the same answers
p2 = run("query", "--index", idx, "--text", "-", "--model", model, "-k", str(K), "--quiet", rc=0,
         stdin="\n".join(texts) + "\n")
def same_lines(a, b, key="path"):
    return len(a) == len(b) and all(
        x["query"] == y["query"] and [r[key] for r in x["results"]] == [r[key] for r in y["results"]]
        and all(abs(r["score"] - q["score"]) <= 1e-5 for r, q in zip(x["results"], y["results"]))
        for x, y in zip(a, b))


check(same_lines(jsonl(p2), answered), "stdin and --model give the same lines")

# --tsv
p = run("query", "--index", idx, "--text", f"{WORK}/tq_in.txt", "-k", str(K), "--tsv",
        "--quiet", rc=3)
rows = [line.split("\t") for line in p.stdout.splitlines()]
check(all(len(r) == 6 for r in rows), "tsv: 6 columns")
check(len(rows) == len(texts) * K + 1, f"tsv rows {len(rows)}")
err_rows = [r for r in rows if r[1] == "error"]
check(len(err_rows) == 1 and err_rows[0][0] == "" and err_rows[0][3], "tsv error row")
good_rows = [r for r in rows if r[1] != "error"]
for i, t in enumerate(texts):
    mine = good_rows[i * K:(i + 1) * K]
    check([r[0] for r in mine] == [t] * K and [int(r[1]) for r in mine] == list(range(1, K + 1)),
          f"tsv query/rank columns {t!r}")
    check([r[3] for r in mine] == [h["path"] for h in answered[i]["results"]] and
          [int(r[2]) for r in mine] == [h["id"] for h in answered[i]["results"]],
          f"tsv paths and ids {t!r}")
    check(all(abs(float(r[4]) - h["score"]) <= 1e-6 for r, h in zip(mine, answered[i]["results"])),
          f"tsv scores {t!r}")

# ---------------------------------------------------------------------------
# image -> text, with an empty line and an unreadable image
# ---------------------------------------------------------------------------
broken = f"{WORK}/broken.jpg"
open(broken, "wb").write(b"not a jpeg at all")
picked = [0, 7, 33, 59]
lines = [img_paths[0], "", img_paths[7], broken, img_paths[33], img_paths[59]]
open(f"{WORK}/iq.txt", "w").write("\n".join(lines) + "\n")
p = run("query", "--index", idx, "--image", f"{WORK}/iq.txt", "-k", str(K), "--batch", "3",
        "--quiet", rc=3)
out = jsonl(p)
check(len(out) == len(lines), "image queries: one line each")
check("error" in out[1] and "error" in out[3] and broken in out[3]["query"], "image errors")
check(not any("error" in out[i] for i in (0, 2, 4, 5)), "the other images are answered")
for o, j in zip([out[0], out[2], out[4], out[5]], picked):
    s = cap_emb @ img_emb[j]
    order = np.argsort(-s, kind="stable")[:K]
    check("path" not in o["results"][0], "image -> text hits carry text, not path")
    same_ranking(o["results"], [captions[c] for c in order], s[order], "text",
                 f"image query {img_paths[j]}")
p = run("query", "--index", idx, "--image", img_paths[7], "-k", "3", "--quiet", rc=0)
check(same_lines([dict(jsonl(p)[0], query="")], [dict(out[2], query="", results=out[2]["results"][:3])],
                 "text"), "--image with one image file")


# ---------------------------------------------------------------------------
# phrase -> region
# ---------------------------------------------------------------------------
def box_rule(sim, w, h):
    """The default box rule (ground_ref.box) and the map's peak; no box when
    float32 against float64 could go either way so near a tie."""
    b, margin, peak = ground_ref.box(sim, w, h, cfg.image_size)
    return (None if margin < 1e-5 else b), peak


boxes_compared = [0]


def same_box(got, want):
    boxes_compared[0] += want is not None
    return want is None or np.abs(np.array(got) - want).max() <= 1e-3


phrases = ["red car", "a blue flower in the park", "white lamp"]
ph_emb = encode_texts(phrases, "ph")
outside = f"{WORK}/outside"
os.makedirs(outside)
shutil.copy(img_paths[12], f"{outside}/copy.png")  # same pixels, not in the index
enc_out = f"{WORK}/outside.npy"
run("encode", "--model", model, "--images", f"{outside}/copy.png", "--out", enc_out, "--patches",
    f"{WORK}/outside_p.npy", "--quiet", rc=0)
out_patches = np.load(f"{WORK}/outside_p.npy")[0]
out_patches /= np.linalg.norm(out_patches, axis=1, keepdims=True)
ph_lines = phrases + [f"{img_paths[12]}\t{phrases[0]}", f"{outside}/copy.png\t{phrases[0]}",
                      f"{WORK}/missing.png\tred car", "   "]
open(f"{WORK}/phq.txt", "w").write("\n".join(ph_lines) + "\n")
p = run("query", "--index", idx, "--phrase", f"{WORK}/phq.txt", "-k", "4", "--quiet", rc=3)
out = jsonl(p)
check(len(out) == len(ph_lines), "phrase queries: one line each")
for i, ph in enumerate(phrases):
    best = np.einsum("npd,d->np", stored_patches, ph_emb[i]).max(axis=1)
    order = np.argsort(-best, kind="stable")[:4]
    res = out[i]["results"]
    check([r["path"] for r in res] == [img_paths[j] for j in order], f"phrase images {ph!r}")
    for r, j in zip(res, order):
        w, h = sizes[j]
        b = r["box"]
        check(0 <= b[0] < b[2] <= w and 0 <= b[1] < b[3] <= h, f"box {b} inside {w}x{h}")
        want, peak = box_rule(stored_patches[j] @ ph_emb[i], w, h)
        check(same_box(b, want) and abs(r["score"] - peak) <= 1e-4,
              f"phrase {ph!r} on {img_paths[j]}: box {b} score {r['score']} want {want} {peak}")
w12, h12 = sizes[12]
want, peak = box_rule(stored_patches[12] @ ph_emb[0], w12, h12)
r = out[3]
check(r.get("image") == img_paths[12] and r["query"] == phrases[0] and len(r["results"]) == 1,
      "within an indexed image: one result")
check(same_box(r["results"][0]["box"], want) and
      abs(r["results"][0]["score"] - peak) <= 1e-4, f"indexed image box {r} want {want}")
want, peak = box_rule(out_patches @ ph_emb[0], w12, h12)
r = out[4]
check(r["results"][0]["id"] is None, "an image outside the index has no id")
check(same_box(r["results"][0]["box"], want) and
      abs(r["results"][0]["score"] - peak) <= 1e-4, f"outside image box {r} want {want}")
check("error" in out[5] and "error" in out[6], "missing image and blank phrase are errors")
p = run("query", "--index", idx, "--phrase", f"{WORK}/phq.txt", "-k", "4", "--tsv", "--quiet",
        rc=3)
rows = [line.split("\t") for line in p.stdout.splitlines()]
check(all(len(r) == 6 for r in rows) and all(len(r[5].split(",")) == 4 for r in rows
                                              if r[1] != "error"), "phrase tsv has boxes")
check(boxes_compared[0] >= 12, f"only {boxes_compared[0]} of 14 phrase boxes away from a near tie")

# ---------------------------------------------------------------------------
# --rerank fine: late interaction over the first max(4k, 50) candidates
# ---------------------------------------------------------------------------
tok = subprocess.run([SL, "tokenizer", "encode", "--model-dir", model, "--context", str(cfg.ctx),
                      "--pad", "-"], input="\n".join(texts) + "\n", capture_output=True,
                     text=True, check=True).stdout
ids = torch.tensor([[int(v) for v in line.split()] for line in tok.splitlines()])
with torch.no_grad():
    _, tok_emb = clip_ref.encode_text(cfg, ref_params, ids)
tok_emb = tok_emb.numpy()
p = run("query", "--index", idx, "--text", "-", "-k", str(K), "--rerank", "fine", "--quiet", rc=0,
        stdin="\n".join(texts) + "\n")
out = jsonl(p)
ncand = max(4 * K, 50)
for i, t in enumerate(texts):
    s = img_emb @ q_emb[i]
    cand = np.argsort(-s, kind="stable")[:ncand]
    n_used = int(ids[i].argmax()) + 1  # through the end token (the largest id)
    tk = tok_emb[i, 1:n_used]  # positions 1..eot: the start token is skipped
    tk = tk / np.linalg.norm(tk, axis=1, keepdims=True)
    late = np.array([(tk @ stored_patches[j].T).max(axis=1).mean() for j in cand])
    got = out[i]["results"]
    got_paths = [r["path"] for r in got]
    check(set(got_paths) <= {img_paths[j] for j in cand}, f"rerank {t!r}: from the candidates")
    want_order = np.argsort(-late, kind="stable")[:K]
    want_scores = late[want_order]
    check(np.abs(np.array([r["score"] for r in got]) - want_scores).max() <= 1e-4,
          f"rerank {t!r}: scores {[r['score'] for r in got]} want {want_scores}")
    for r in got:  # each reported score is that image's late score
        j = img_paths.index(r["path"])
        check(abs(r["score"] - late[list(cand).index(j)]) <= 1e-4, f"rerank {t!r}: {r}")
    check(all(got[a]["score"] >= got[a + 1]["score"] for a in range(len(got) - 1)),
          f"rerank {t!r}: sorted by the new score")
p = run("query", "--index", idx, "--image", img_paths[3], "-k", "3", "--rerank", "fine",
        "--quiet", rc=0)
got = jsonl(p)[0]["results"]
check(len(got) == 3 and got[0]["score"] >= got[1]["score"] >= got[2]["score"],
      "image -> text rerank answers, sorted")

# ---------------------------------------------------------------------------
# Clear errors
# ---------------------------------------------------------------------------
p = run("query", "--index", f"{WORK}/nothing", "--text", "-", rc=1, stdin="x\n")
check("no index" in p.stderr, f"missing index message: {p.stderr}")
run("query", "--index", idx, rc=2)
run("query", "--index", idx, "--text", "-", "--image", broken, rc=2)
run("query", "--index", idx, "--phrase", "-", "--rerank", "fine", rc=2)
bare = f"{WORK}/bare"
run("index", "build", "--model", model, "--index", bare, "--images", f"{photos}/p00.png",
    "--quiet", rc=0)
p = run("query", "--index", bare, "--image", img_paths[0], rc=1)
check("index texts" in p.stderr, f"no-texts message: {p.stderr}")
p = run("query", "--index", bare, "--phrase", "-", rc=3, stdin="red car\n")
check("--region" in jsonl(p)[0].get("error", ""), f"no-regions message: {p.stdout}")
p = run("query", "--index", bare, "--phrase", "-", "--quiet", rc=0,
        stdin=f"{img_paths[0]}\tred car\n")
check(len(jsonl(p)[0]["results"]) == 1, "within-image phrase without regions")
p = run("query", "--index", bare, "--text", "-", "--rerank", "fine", rc=1, stdin="red car\n")
check("--region" in p.stderr, f"rerank without regions: {p.stderr}")
other = subprocess.run(["/usr/bin/python3", f"{REF}/clip_ref.py", "case", "hf_f32_p16_h3", WORK],
                       check=True, capture_output=True, text=True).stdout.strip()
p = run("query", "--index", idx, "--text", "-", "--model", other, rc=1, stdin="x\n")
check("fingerprint" in p.stderr, f"model mismatch message: {p.stderr}")

# ---------------------------------------------------------------------------
# --html: one self-contained page, rendered by Chromium when installed
# ---------------------------------------------------------------------------
page = f"{WORK}/report/page.html"
os.makedirs(f"{WORK}/report")
p = run("query", "--index", idx, "--phrase", f"{WORK}/phq.txt", "-k", "4", "--html", page,
        "--quiet", rc=3)
check(p.stdout == "", "--html writes nothing on stdout")
html = open(page, encoding="utf-8").read()
n_hits = 3 * 4 + 2  # corpus-wide phrases x k, plus the two within-image answers
check(html.count('<img class="thumb"') == n_hits, "a thumbnail per hit")
check(html.count('class="box"') == n_hits, "a box per hit")
check("http:" not in html and "https:" not in html and "<script" not in html, "self-contained")
check(html.count("data:image/jpeg;base64,") == n_hits, "thumbnails embedded")
tricky = f"{WORK}/q<b>&amp;\"x'.txt"
open(tricky, "w").write("<b>bold</b> & \"quoted\" 'single'\n")
run("query", "--index", idx, "--text", tricky, "-k", "2", "--html", f"{WORK}/report/t.html",
    "--quiet", rc=0)
t_html = open(f"{WORK}/report/t.html", encoding="utf-8").read()
check("&lt;b&gt;bold&lt;/b&gt; &amp; &quot;quoted&quot; &#39;single&#39;" in t_html,
      "queries are escaped")
check("<b>" not in t_html, "no raw markup from a query")
rc = subprocess.run(["/usr/bin/python3", f"{REF}/html_check.py", page, str(n_hits), str(n_hits),
                     f"{WORK}/report/page.png"]).returncode
if rc == 77:
    print("SKIP: chromium is not installed; the page was not rendered")
else:
    check(rc == 0, "the page renders in headless Chromium with every thumbnail and box")

sys.exit(cli_harness.finish("query_cli"))
