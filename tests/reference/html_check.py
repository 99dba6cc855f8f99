#!/usr/bin/python3
"""Render a `sightline query --html` page in headless Chromium and check the
rendered DOM: the expected number of result thumbnails (img.thumb) and box
overlays (div.box), every thumbnail decoded (naturalWidth > 0 is not
observable from --dump-dom, so the page is also screenshot and the PNG must
be non-blank), and no external resource referenced.

usage: html_check.py PAGE.html N_THUMBS N_BOXES [SCREENSHOT.png]
exit: 0 ok, 1 mismatch, 77 chromium not installed (skip)."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

page, n_thumbs, n_boxes = os.path.abspath(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
shot = sys.argv[4] if len(sys.argv) > 4 else None
chromium = shutil.which("chromium") or shutil.which("chromium-browser")
if not chromium:
    print("html_check: no chromium")
    sys.exit(77)

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--window-size=1200,900"]
ok = True
with tempfile.TemporaryDirectory() as prof:
    t0 = time.time()
    dom = subprocess.run([chromium, *FLAGS, f"--user-data-dir={prof}/a", "--dump-dom",
                          "file://" + page], capture_output=True, text=True, timeout=120).stdout
    t1 = time.time()
    thumbs = len(re.findall(r'<img class="thumb"', dom))
    boxes = len(re.findall(r'<div class="box"', dom))
    print(f"html_check: dump-dom {t1 - t0:.1f}s: {thumbs} thumbnails, {boxes} boxes")
    if thumbs != n_thumbs or boxes != n_boxes:
        print(f"html_check: wanted {n_thumbs} thumbnails and {n_boxes} boxes")
        ok = False
    if re.search(r'(src|href)="(https?:)?//', dom):
        print("html_check: the page references an external resource")
        ok = False
    if shot:
        if os.path.exists(shot):
            os.remove(shot)
        subprocess.run([chromium, *FLAGS, f"--user-data-dir={prof}/b", f"--screenshot={shot}",
                        "file://" + page], capture_output=True, timeout=120)
        t2 = time.time()
        size = os.path.getsize(shot) if os.path.exists(shot) else 0
        print(f"html_check: screenshot {t2 - t1:.1f}s: {shot} ({size} bytes)")
        if size == 0:
            ok = False
        else:
            try:  # a rendered page is not one flat colour
                from PIL import Image
                im = Image.open(shot).convert("RGB")
                lo, hi = zip(*im.getextrema())
                if im.size != (1200, 900) or max(h - l for l, h in zip(lo, hi)) < 50:
                    print(f"html_check: screenshot {im.size} looks blank")
                    ok = False
            except ImportError:
                pass
sys.exit(0 if ok else 1)
