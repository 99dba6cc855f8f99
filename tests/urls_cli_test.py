"""Integration test of URL-list sources: `sightline index build|update --urls
LIST.tsv` against a local HTTP server (tests/reference/http_server.py on
127.0.0.1; nothing else is contacted). A random-weight model from
tests/reference/clip_ref.py, generated JPEGs plus bad entries (404, HTML, ftp://,
a malformed line, a flaky URL, a redirect); then a no-change update that
downloads and encodes nothing, a removed record re-encoded from the cache
without a download, lines removed from the list (removed from the index),
and the mass-deletion guard for an empty or missing list.
usage: urls_cli_test.py SIGHTLINE REFERENCE_DIR WORK_DIR"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import numpy as np
from PIL import Image

SL, REF, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, REF)
import cli_harness  # noqa: E402
from cli_harness import check, index_summary as summary  # noqa: E402

cli_harness.init(SL)
ENV = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
ENV["no_proxy"] = "*"


def run(*args, rc=None):
    return cli_harness.run(*args, rc=rc, env=ENV)


shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
subprocess.run(["/usr/bin/python3", f"{REF}/clip_ref.py", "case", "hf_f32_p16_h3", WORK],
               check=True, capture_output=True)
model = f"{WORK}/hf_f32_p16_h3"

# the served folder
www = f"{WORK}/www"
os.makedirs(www)
rng = np.random.default_rng(7)
names = [f"u{i:02d}.jpg" for i in range(12)] + ["flaky.jpg", "moved.jpg"]
for i, n in enumerate(names):
    Image.fromarray((rng.random((80 + i, 100, 3)) * 255).astype(np.uint8)).save(f"{www}/{n}",
                                                                                 quality=90)

port_file = f"{WORK}/port"
server = subprocess.Popen(["/usr/bin/python3", f"{REF}/http_server.py", www, port_file])
try:
    for _ in range(200):
        if os.path.exists(port_file):
            break
        time.sleep(0.05)
    port = int(open(port_file).read())
    base = f"http://127.0.0.1:{port}"

    def counts():
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                f"{base}/__counts", timeout=10) as r:
            return json.load(r)

    good = [f"{base}/files/{n}" for n in names[:12]]
    flaky, moved = f"{base}/flaky/1/flaky.jpg", f"{base}/redirect/2/moved.jpg"
    bad = {f"{base}/status/404": "HTTP 404", f"{base}/html": "not an image (text/html",
           f"ftp://127.0.0.1:{port}/files/u00.jpg": "only http and https"}
    lst = f"{WORK}/list.tsv"

    def write_list(urls, extra=""):
        with open(lst, "w") as f:
            f.write("# images for the URL test\n\n")
            f.write(extra)  # first, so its line number stays the same
            for i, u in enumerate(urls):
                f.write(f"{u}\tcaption {i}\n")

    malformed = "not a url\tcaption\n"
    write_list(good + [flaky, moved] + list(bad), malformed)
    malformed_at = 3  # its line number

    # build: 14 images, 4 failures, exit 3
    idx = f"{WORK}/idx"
    p = run("index", "build", "--model", model, "--index", idx, "--urls", lst, "--parallel", "4",
            "--timeout", "10", "--retries", "2", rc=3)
    s = summary(p)
    check(s["total"] == 14 and s["added"] == 14 and s["failed"] == 4 and s["seen"] == 18,
          f"build summary {s}")
    c = counts()
    check(c.get(f"/flaky/1/flaky.jpg") == 2, f"flaky retried once: {c}")
    check(all(c.get(f"/files/{n}") == 1 for n in names[:12]), f"one request per image: {c}")
    check(not any("ftp" in k for k in c), "ftp never reaches the server")
    run("index", "verify", "--index", idx, rc=0)
    st = json.loads(run("index", "stats", "--index", idx, "--json", rc=0).stdout)
    failed = {f["path"]: f["error"] for f in st["failures"]}
    for u, why in bad.items():
        check(why in failed.get(u, ""), f"stats lists {u} with '{why}': {failed}")
    check(f"malformed line {malformed_at} of {lst}" in failed.get("not a url", ""),
          f"malformed line named by file and line: {failed}")
    check(st["images"] == 14 and f"urls:{lst}" in st["sources"], f"stats {st['images']} "
          f"{st['sources']}")
    # the cache is content-addressed
    h = hashlib.sha256(open(f"{www}/u00.jpg", "rb").read()).hexdigest()
    check(os.path.isfile(f"{idx}/downloads/{h[:2]}/{h}"), "cache file named by its SHA-256")

    # nothing changed: nothing downloaded, nothing encoded
    before = counts()
    p = run("index", "update", "--index", idx, rc=0)
    s = summary(p)
    check(s["unchanged"] == 18 and s["added"] == 0 and s["updated"] == 0 and s["failed"] == 0,
          f"no-change update {s}")
    check(counts() == before, "no-change update made no request")

    # a record removed by hand is re-encoded from the cache, without a download
    p = run("index", "remove", "--index", idx, good[3], rc=0)
    check("removed 1" in p.stdout, "remove by URL")
    s = summary(run("index", "update", "--index", idx, "--model", model, rc=0))
    check(s["added"] == 1 and s["total"] == 14, f"re-encoded from the cache {s}")
    check(counts() == before, "re-encoding from the cache made no request")

    # lines removed from the list leave the index (2 of 14: within --max-delete)
    write_list(good[2:] + [flaky, moved] + list(bad), malformed)
    s = summary(run("index", "update", "--index", idx, rc=0))
    check(s["removed"] == 2 and s["total"] == 12, f"removed lines {s}")
    st = json.loads(run("index", "stats", "--index", idx, "--json", rc=0).stdout)
    check(st["images"] == 12, f"stats after removal {st['images']}")
    run("index", "verify", "--index", idx, rc=0)

    # the guard: an emptied list or a missing one removes nothing
    write_list([])
    p = run("index", "update", "--index", idx, rc=3)
    check("lists no URLs" in p.stderr and summary(p)["removed"] == 0, "empty list holds removals")
    os.rename(lst, lst + ".away")
    p = run("index", "update", "--index", idx, rc=3)
    check("missing" in p.stderr and summary(p)["removed"] == 0, "missing list holds removals")
    os.rename(lst + ".away", lst)
    check(counts() == before, "the guarded runs made no request")
    run("index", "verify", "--index", idx, rc=0)

    # usage: a list that does not exist
    run("index", "update", "--index", idx, "--urls", f"{WORK}/nope.tsv", rc=1)
finally:
    server.terminate()
    server.wait(timeout=10)

sys.exit(cli_harness.finish("urls_cli"))
