"""Optimizer reference for sightline's trainer (tests/test_train_parity.c).

The tiny CLIP of train_ref.py (random init, written in the Hugging Face
layout), a fixed batch, and STEPS updates of torch.optim.AdamW (betas 0.9,
0.98, eps 1e-6, weight decay 0.2 on weight matrices only: >= 2-D tensors
other than the token and position embeddings), linear warmup then cosine
(open_clip's cosine_lr through LambdaLR), global gradient-norm clipping at
1.0. Float64 throughout. Records the loss before each update.

usage: train_steps_ref.py OUT_DIR   writes OUT_DIR/model/{config.json,
model.safetensors}, pixels.bin, tokens.bin, losses.txt (one repr a line),
hparams.txt ("lr warmup steps clip"), final.safetensors (parameters after
the last update, F32).
"""
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clip_ref  # noqa: E402
import train_ref  # noqa: E402

STEPS, WARMUP, LR, CLIP = 10, 3, 1e-4, 1.0


def lr_factor(step):
    if step < WARMUP:
        return (step + 1) / WARMUP
    e, E = step - WARMUP, STEPS - WARMUP
    return 0.5 * (1 + math.cos(math.pi * e / E))


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = argv[1]
    mdir = os.path.join(out, "model")
    os.makedirs(mdir, exist_ok=True)
    torch.set_num_threads(1)
    cfg = clip_ref.Config(**train_ref.TINY, act="quick_gelu", pool_argmax=False)
    seed = 4242
    p = clip_ref.random_params(cfg, seed)
    p["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    named = clip_ref.hf_names(cfg, p)
    stored = clip_ref.st_write(os.path.join(mdir, "model.safetensors"), named, "F32",
                               {"format": "pt"})
    with open(os.path.join(mdir, "config.json"), "w") as f:
        json.dump(clip_ref.hf_config(cfg), f, indent=1)
    keys = clip_ref.hf_names(cfg, {k: k for k in p})
    q = {keys[n]: stored[n].double().clone().requires_grad_(True) for n in named}
    decay, plain = [], []
    for n in named:
        t = q[keys[n]]
        nodecay = t.dim() < 2 or "position_embedding" in n or "token_embedding" in n
        (plain if nodecay else decay).append(t)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.2},
                             {"params": plain, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.98), eps=1e-6)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    g = torch.Generator().manual_seed(seed + 1)
    pixels = torch.randn(train_ref.B, 3, cfg.image_size, cfg.image_size, generator=g)
    ids = clip_ref.make_tokens(cfg, train_ref.B, g)
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = train_ref.loss_of(cfg, q, pixels.double(), ids)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(q.values()), CLIP)
        opt.step()
        sched.step()
        losses.append(float(loss))
    pixels.numpy().astype("<f4").tofile(os.path.join(out, "pixels.bin"))
    ids.numpy().astype("<i4").tofile(os.path.join(out, "tokens.bin"))
    with open(os.path.join(out, "losses.txt"), "w") as f:
        f.write("".join(repr(x) + "\n" for x in losses))
    with open(os.path.join(out, "hparams.txt"), "w") as f:
        f.write(f"{LR!r} {WARMUP} {STEPS} {CLIP!r}\n")
    final = {n: q[keys[n]].detach().float() for n in named}
    clip_ref.st_write(os.path.join(out, "final.safetensors"), final, "F32")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
