"""Gradient reference for sightline's trainer (tests/test_train_grad.c).

Builds a tiny random CLIP with clip_ref.py's architecture, writes it in the
Hugging Face layout, and computes in float64 with autograd the symmetric
InfoNCE loss of a batch and the gradient of every parameter tensor:

  img = normalize(image tower(pixels)), txt = normalize(text tower(ids))
  logits = exp(min(logit_scale, ln 100)) * img . txt^T
  loss = (CE(logits, arange) + CE(logits^T, arange)) / 2

and, in the cases with a dense weight w and sharpness beta, plus w times
the same loss over the dense logits
  s * (1/beta) log mean_p exp(beta patch_bp . txt_j)
where patch_bp are the normalised value-path patch tokens of image b, read
from the last block's LN1 output detached (the dense term's gradient stops
there).

usage: train_ref.py OUT_DIR      writes OUT_DIR/cases.txt (one case name a
line) and per case OUT_DIR/NAME/:
  model/config.json, model/model.safetensors   the checkpoint (F32)
  pixels.bin    float32 [B, 3, S, S] (little-endian, C order)
  tokens.bin    int32 [B, ctx]
  loss.txt      the loss (repr of a float64)
  dense.txt     (dense cases) "weight beta"
  grads.safetensors   float32 gradient of every tensor, HF names
"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clip_ref  # noqa: E402

B = 6
TINY = dict(image_size=32, patch=8, v_width=48, v_layers=2, v_heads=3, v_mlp=192,
            t_width=32, t_layers=2, t_heads=2, t_mlp=128, ctx=16, vocab=600, embed=24,
            eos=599)
# name: (overrides, logit_scale, dense (weight, beta) or None)
CASES = {
    "quick_gelu_argmax": (dict(act="quick_gelu", pool_argmax=True), math.log(1 / 0.07), None),
    "gelu_eos": (dict(act="gelu", pool_argmax=False), 4.0, None),
    "dense": (dict(act="quick_gelu", pool_argmax=False), 3.0, (0.5, 5.0)),
}


def symmetric_ce(logits):
    target = torch.arange(logits.shape[0])
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def loss_of(cfg, p, pixels, ids, dense=None):
    img, patches = clip_ref.encode_image(cfg, p, pixels, with_patches=dense is not None,
                                         patch_tokens="value", detach_value=True)
    txt, _ = clip_ref.encode_text(cfg, p, ids, with_tokens=False)
    img = F.normalize(img, dim=-1)
    txt = F.normalize(txt, dim=-1)
    s = torch.exp(torch.clamp(p["logit_scale"], max=math.log(100.0)))
    loss = symmetric_ce(s * img @ txt.t())
    if dense is not None:
        w, beta = dense
        a = torch.einsum("bpd,jd->bjp", F.normalize(patches, dim=-1), txt)
        sim = (torch.logsumexp(beta * a, dim=-1) - math.log(a.shape[-1])) / beta
        loss = loss + w * symmetric_ce(s * sim)
    return loss


def write_case(name, out):
    over, scale, dense = CASES[name]
    cfg = clip_ref.Config(**TINY, **over)
    seed = 1000 + sum(ord(c) for c in name)
    p = clip_ref.random_params(cfg, seed)
    p["logit_scale"] = torch.tensor(scale)
    d = os.path.join(out, name)
    mdir = os.path.join(d, "model")
    os.makedirs(mdir, exist_ok=True)
    named = clip_ref.hf_names(cfg, p)
    stored = clip_ref.st_write(os.path.join(mdir, "model.safetensors"), named, "F32",
                               {"format": "pt"})
    import json
    with open(os.path.join(mdir, "config.json"), "w") as f:
        json.dump(clip_ref.hf_config(cfg), f, indent=1)
    keys = clip_ref.hf_names(cfg, {k: k for k in p})  # HF name -> canonical key
    q = {keys[n]: stored[n].double().requires_grad_(True) for n in named}
    g = torch.Generator().manual_seed(seed + 1)
    pixels = torch.randn(B, 3, cfg.image_size, cfg.image_size, generator=g)
    ids = clip_ref.make_tokens(cfg, B, g)
    loss = loss_of(cfg, q, pixels.double(), ids, dense)
    loss.backward()
    pixels.numpy().astype("<f4").tofile(os.path.join(d, "pixels.bin"))
    ids.numpy().astype("<i4").tofile(os.path.join(d, "tokens.bin"))
    with open(os.path.join(d, "loss.txt"), "w") as f:
        f.write(repr(float(loss)) + "\n")
    if dense is not None:
        with open(os.path.join(d, "dense.txt"), "w") as f:
            f.write("%r %r\n" % dense)
    grads = {n: q[keys[n]].grad.float() for n in named}
    clip_ref.st_write(os.path.join(d, "grads.safetensors"), grads, "F32")


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = argv[1]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    for name in CASES:
        write_case(name, out)
    with open(os.path.join(out, "cases.txt"), "w") as f:
        f.write("\n".join(CASES) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
