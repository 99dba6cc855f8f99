"""Integration test of `sightline report`, driven as a user would: a
random-weight CLIP-shaped model (tests/reference/clip_ref.py) with a BPE
vocabulary from `sightline tokenizer train`, generated pictures, an index
with regions and a text side, then the real outputs of `sightline query`
(text, image and phrase JSON Lines) and of `sightline eval retrieval --json`
and `eval grounding --json` (a small Flickr30K Entities set written here)
made into one page:
  - the figures printed on stdout are those of the JSON files;
  - the page holds the tables (R@1/5/10, medr, meanr, RSUM; accuracy per
    type and overall), one section per query, --top results each, every
    thumbnail embedded, a box per phrase hit at the position of its pixels,
    texts of image queries, the error of a failed query; everything escaped;
    no script, nothing external; rendered by headless Chromium when there;
  - an unreadable picture is linked (relative to the page) instead, exit 0;
  - errors name the file and line: bad JSON, a line without results, a box
    that is not 4 numbers, an eval file of neither kind, a missing file;
    usage errors exit 2.
usage: report_cli_test.py SIGHTLINE REFERENCE_DIR WORK_DIR"""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image

SL, REF, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, REF)
import clip_ref  # noqa: E402

import cli_harness  # noqa: E402
from cli_harness import check, run  # noqa: E402

cli_harness.init(SL)



if subprocess.run([SL, "report", "--help"], capture_output=True).returncode != 0:
    print("SKIP: this sightline has no report command")
    sys.exit(77)
shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)

# ---- a model, pictures, an index ------------------------------------------
rng = np.random.default_rng(11)
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
clip_ref.st_write(f"{model}/model.safetensors",
                  clip_ref.hf_names(cfg, clip_ref.random_params(cfg, 4)), "F32", {"format": "pt"})
json.dump(clip_ref.hf_config(cfg), open(f"{model}/config.json", "w"), indent=1)

photos = f"{WORK}/photos"
os.makedirs(photos)
names = []
for i in range(8):
    w, h = (96, 64) if i % 2 else (60, 120)
    img = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    names.append(f"p{i}.png")
    Image.fromarray(img).save(f"{photos}/p{i}.png")
idx = f"{WORK}/idx"
run("index", "build", "--model", model, "--index", idx, "--images", photos, "--region", "--quiet",
    rc=0)
run("index", "texts", "--model", model, "--index", idx, "--texts", cap_file, "--quiet", rc=0)

# ---- real outputs of query and eval ---------------------------------------
tq = f"{WORK}/tq.txt"
open(tq, "w").write("a red cat\n<b>bold</b> & \"quoted\"\n\n")  # the empty line fails
text_jsonl = f"{WORK}/text.jsonl"
p = run("query", "--index", idx, "--text", tq, "-k", "3", "--quiet")
check(p.returncode == 3, "the empty query line fails on its own")
open(text_jsonl, "w").write(p.stdout)
image_jsonl = f"{WORK}/image.jsonl"
open(image_jsonl, "w").write(run("query", "--index", idx, "--image", f"{photos}/p1.png", "-k", "2",
                                 "--quiet", rc=0).stdout)
pq = f"{WORK}/pq.txt"
open(pq, "w").write(f"a blue boat\n{photos}/p3.png\ta green tree\n")
phrase_jsonl = f"{WORK}/phrase.jsonl"
open(phrase_jsonl, "w").write(run("query", "--index", idx, "--phrase", pq, "-k", "3", "--quiet",
                                  rc=0).stdout)

kp = {"dataset": "tiny", "images": [
    {"filename": n, "split": "test", "sentences": [{"raw": captions[i]}, {"raw": captions[i + 8]}]}
    for i, n in enumerate(names)]}
json.dump(kp, open(f"{WORK}/kp.json", "w"))
retrieval_json = f"{WORK}/retrieval.json"
run("eval", "retrieval", "--model", model, "--karpathy", f"{WORK}/kp.json", "--index", idx,
    "--json", retrieval_json, "--quiet", rc=0)

ent = f"{WORK}/entities"
os.makedirs(f"{ent}/Sentences")
os.makedirs(f"{ent}/Annotations")
for i, n in enumerate(names[:4]):
    stem = n[:-4]
    w, h = Image.open(f"{photos}/{n}").size
    open(f"{ent}/Sentences/{stem}.txt", "w").write(
        f"[/EN#{10 * i + 1}/animals A cat] next to [/EN#{10 * i + 2}/vehicles a red car]\n")
    objs = "".join(
        f"<object><name>{10 * i + k}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
        f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for k, (x0, y0, x1, y1) in ((1, (1, 1, w // 2, h // 2)), (2, (w // 3, h // 3, w, h))))
    open(f"{ent}/Annotations/{stem}.xml", "w").write(
        f"<annotation><filename>{n}</filename><size><width>{w}</width><height>{h}</height>"
        f"<depth>3</depth></size>{objs}</annotation>\n")
    Image.open(f"{photos}/{n}").convert("RGB").save(f"{ent}/{stem}.jpg", quality=95)
grounding_json = f"{WORK}/grounding.json"
run("eval", "grounding", "--model", model, "--entities", ent, "--images", ent, "--json",
    grounding_json, "--quiet", rc=0)

# ---- the page -------------------------------------------------------------
page = f"{WORK}/out/report.html"
os.makedirs(f"{WORK}/out")
TOP = 2
p = run("report", "--out", page, "--title", "demo <page>", "--top", str(TOP), "--eval",
        retrieval_json, "--eval", grounding_json, "--results", text_jsonl, "--results",
        image_jsonl, "--results", phrase_jsonl, rc=0)
html = open(page, encoding="utf-8").read()
R, G = json.load(open(retrieval_json)), json.load(open(grounding_json))
check(f"R@1 image->text {R['i2t']['r1']:.2f}, text->image {R['t2i']['r1']:.2f}; "
      f"RSUM {R['rsum']:.2f}" in p.stdout, f"retrieval figures on stdout: {p.stdout!r}")
check(f"accuracy {G['accuracy']:.2f}%" in p.stdout, f"grounding figure on stdout: {p.stdout!r}")
check("wrote " in p.stderr, "a summary line on stderr")

# tables
for d in ("i2t", "t2i"):
    s = R[d]
    row = (f"<td>{s['r1']:.2f}</td><td>{s['r5']:.2f}</td><td>{s['r10']:.2f}</td>"
           f"<td>{s['medr']:.1f}</td><td>{s['meanr']:.2f}</td><td>{s['queries']}</td>")
    check(row in html, f"{d} row in the table")
check(f"<b>{R['rsum']:.2f}</b>" in html, "RSUM in the table")
for t, v in G["per_type"].items():
    check(f"<td>{t}</td><td>{v['phrases']}</td><td>{v['correct']}</td>"
          f"<td>{v['accuracy']:.2f}%</td>" in html, f"grounding row {t}")
check(f"<td><b>{G['accuracy']:.2f}%</b></td>" in html, "overall grounding accuracy")
# a --contrast evaluation says so in its table's caption
check("against its sentence" not in html, "a plain grounding run called contrasted")
with open(f"{WORK}/grounding_contrast.json", "w") as f:
    json.dump(dict(G, contrast=True), f)
run("report", "--out", f"{WORK}/out/contrast.html", "--eval", f"{WORK}/grounding_contrast.json",
    rc=0)
check("each phrase against its sentence&#39;s others" in open(f"{WORK}/out/contrast.html").read(),
      "the --contrast run's caption (HTML-escaped)")

# sections, thumbnails, boxes
lines = [json.loads(x) for f in (text_jsonl, image_jsonl, phrase_jsonl) for x in open(f)]
n_img_hits = sum(min(TOP, len(q.get("results", []))) for q in lines
                 if not any("text" in r for r in q.get("results", [])))
n_image_queries = sum(1 for q in lines if any("text" in r for r in q.get("results", [])))
n_boxes = sum(min(TOP, len(q["results"])) for q in lines if "results" in q and q["results"]
              and "box" in q["results"][0])
n_texts = sum(min(TOP, len(q["results"])) for q in lines if n_image_queries and "results" in q
              and q["results"] and "text" in q["results"][0])
check(html.count('<section class="q">') == len(lines), "a section per query")
n_thumbs = n_img_hits + n_image_queries
check(html.count('<img class="thumb"') == n_thumbs, f"{n_thumbs} thumbnails")
check(html.count("data:image/jpeg;base64,") == n_thumbs, "every thumbnail embedded")
check(html.count('class="box"') == n_boxes and n_boxes > 0, f"{n_boxes} boxes")
check(html.count('<div class="txt">') == n_texts and n_texts > 0, "texts of image queries")
check('<p class="err">error: ' in html, "the failed query's error is shown")
check("&lt;b&gt;bold&lt;/b&gt; &amp; &quot;quoted&quot;" in html and "<b>bold" not in html,
      "queries escaped")
check("<title>demo &lt;page&gt;</title>" in html, "title escaped")
check("<script" not in html and "http:" not in html and "https:" not in html, "self-contained")
# a box at the position of its pixels (percent of the picture as displayed)
ph = [q for q in lines if q.get("image")][0]
hit = ph["results"][0]
w, h = Image.open(hit["path"]).size
x0, y0, x1, y1 = hit["box"]
want = (f"left:{100 * x0 / w:.3f}%;top:{100 * y0 / h:.3f}%;width:{100 * (x1 - x0) / w:.3f}%;"
        f"height:{100 * (y1 - y0) / h:.3f}%")
check(want in html, f"box style {want}")

# stdin, and a picture that cannot be read (linked instead)
gone = {"query": "gone", "results": [{"id": 1, "path": f"{WORK}/gone.png", "score": 0.5}]}
p = run("report", "--out", f"{WORK}/out/stdin.html", "--results", "-", rc=0,
        stdin=json.dumps(gone) + "\n")
s = open(f"{WORK}/out/stdin.html").read()
check('src="../gone.png"' in s, "an unreadable picture is linked relative to the page")
check("gone.png" in p.stderr, "and named in a warning")

# ---- errors ----------------------------------------------------------------
def bad(content, want, name="bad.jsonl", kind="--results"):
    path = f"{WORK}/{name}"
    open(path, "w").write(content)
    p = run("report", "--out", f"{WORK}/out/bad.html", kind, path, rc=1)
    check(want.format(path=path) in p.stderr, f"error {want!r}: {p.stderr!r}")


ok_line = json.dumps({"query": "x", "results": []})
bad(ok_line + "\n\n{not json\n", "{path}:3: column")
bad(ok_line + "\n" + json.dumps({"query": "y"}) + "\n", "{path}:2: neither a \"results\" array")
bad(json.dumps({"query": "z", "results": [{"path": "a.png", "score": 1, "box": [1, 2, 3]}]}),
    "{path}:1: result 1: \"box\" is not [x0, y0, x1, y1]")
bad(json.dumps({"query": "z", "results": [{"path": "a.png"}]}), "{path}:1: result 1 has no numeric")
bad("[1, 2]\n", "{path}:1: not a JSON object")
bad('{"query": 3, "results": []}\n', "{path}:1: no \"query\" string")
bad('{"i2t": {}, "t2i": {}}', "{path}: \"i2t\".\"r1\" is missing", "e1.json", "--eval")
bad('{"something": 1}', "{path}: neither the JSON of 'sightline eval retrieval", "e2.json",
    "--eval")
bad('{"a": 1,', "{path} line 1", "e3.json", "--eval")
p = run("report", "--out", f"{WORK}/out/x.html", "--results", f"{WORK}/missing.jsonl", rc=1)
check(f"{WORK}/missing.jsonl" in p.stderr, "a missing file is named")
check(not os.path.exists(f"{WORK}/out/bad.html") and not os.path.exists(f"{WORK}/out/x.html"),
      "no page written on error")
run("report", "--results", text_jsonl, rc=2)
run("report", "--out", page, rc=2)
run("report", "--out", page, "--results", text_jsonl, "--top", "0", rc=2)
run("report", "--out", page, "--bogus", rc=2)

# ---- rendered --------------------------------------------------------------
rc = subprocess.run(["/usr/bin/python3", f"{REF}/html_check.py", page, str(n_thumbs), str(n_boxes),
                     f"{WORK}/out/report.png"]).returncode
if rc == 77:
    print("report_cli: chromium not installed, rendering not checked")
else:
    check(rc == 0, "html_check.py on the page")

sys.exit(cli_harness.finish("report_cli"))
