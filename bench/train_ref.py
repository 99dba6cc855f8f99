"""PyTorch side of bench/train.c: the same CLIP training step (tests/reference/
train_ref.py's loss over clip_ref.py's model, float32, autograd) with
torch.optim.AdamW, on the checkpoint and batch that `make` writes and
sightline loads.

usage:
  train_ref.py make DIR small|vitb32 BATCH
      write DIR/model/{config.json,model.safetensors} (random weights, F32),
      DIR/pixels.bin (float32 [B, 3, S, S]) and DIR/tokens.bin (int32
      [B, ctx], end tokens at varied positions: clip_ref.make_tokens), and
      print one line "ctx=<n> mean_end=<mean end-token position>"
  train_ref.py run DIR BATCH WARMUP STEPS THREADS LR
      WARMUP untimed then STEPS timed steps (zero_grad, forward, backward,
      AdamW step); print "per_s=<samples/s> median_s=<s> rss_kb=<peak>
      fwd_s=<median forward s> bwd_s=<median backward s> opt_s=<median step s>
      loss0=<loss of the first step>"
"""
import os
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import clip_ref  # noqa: E402
import train_ref  # noqa: E402  (tests/reference/train_ref.py: loss_of)

# The small model of the issue: 4 layers, width 256, 4 heads in both towers,
# 64 px images in patches of 8 (64 patches + class token), text ctx 32.
SMALL = dict(v_width=256, v_layers=4, v_heads=4, v_mlp=1024, t_width=256, t_layers=4, t_heads=4,
             t_mlp=1024, image_size=64, patch=8, ctx=32, vocab=49408, embed=256, eos=49407)
# etc/train/vit-b-32.json sizes.
VITB32 = dict(v_width=768, v_layers=12, v_heads=12, v_mlp=3072, t_width=512, t_layers=12, t_heads=8,
              t_mlp=2048, image_size=224, patch=32, ctx=77, vocab=49408, embed=512, eos=49407)
SHAPES = {"small": SMALL, "vitb32": VITB32}
BETAS, EPS, WD = (0.9, 0.98), 1e-6, 0.2


def make(d, shape, batch):
    import json
    import math
    cfg = clip_ref.Config(**SHAPES[shape], act="quick_gelu", pool_argmax=False)
    p = clip_ref.random_params(cfg, 2024)
    p["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    mdir = os.path.join(d, "model")
    os.makedirs(mdir, exist_ok=True)
    clip_ref.st_write(os.path.join(mdir, "model.safetensors"), clip_ref.hf_names(cfg, p), "F32",
                      {"format": "pt"})
    with open(os.path.join(mdir, "config.json"), "w") as f:
        json.dump(clip_ref.hf_config(cfg), f, indent=1)
    g = torch.Generator().manual_seed(2025)
    pixels = torch.randn(batch, 3, cfg.image_size, cfg.image_size, generator=g)
    ids = clip_ref.make_tokens(cfg, batch, g)
    pixels.numpy().astype("<f4").tofile(os.path.join(d, "pixels.bin"))
    ids.numpy().astype("<i4").tofile(os.path.join(d, "tokens.bin"))
    ends = clip_ref.pool_positions(cfg, ids).double()
    print(f"ctx={cfg.ctx} mean_end={float(ends.mean()):.2f}")


def run(d, batch, warmup, steps, threads, lr):
    torch.set_num_threads(threads)
    cfg, p = clip_ref.load_hf_dir(os.path.join(d, "model"))
    S, T = cfg.image_size, cfg.ctx
    pixels = torch.from_file(os.path.join(d, "pixels.bin"), size=batch * 3 * S * S,
                             dtype=torch.float32).view(batch, 3, S, S)
    ids = torch.from_file(os.path.join(d, "tokens.bin"), size=batch * T,
                          dtype=torch.int32).view(batch, T).long()
    q = {k: v.float().clone().requires_grad_(True) for k, v in p.items()}
    del p
    decay, plain = [], []
    for k, t in q.items():
        # as train_steps_ref.py: weight matrices only (not embeddings / positions)
        nodecay = t.dim() < 2 or k in ("t.tok", "t.pos", "v.pos")
        (plain if nodecay else decay).append(t)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD},
                             {"params": plain, "weight_decay": 0.0}],
                            lr=lr, betas=BETAS, eps=EPS)
    times, fwd, bwd, ost, loss0 = [], [], [], [], None
    for it in range(warmup + steps):
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = train_ref.loss_of(cfg, q, pixels, ids)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if not torch.isfinite(loss):
            print("non-finite loss", file=sys.stderr)
            return 1
        if loss0 is None:
            loss0 = float(loss)
        if it >= warmup:
            times.append(t3 - t0)
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
            ost.append(t3 - t2)
    med = statistics.median(times)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"per_s={batch / med:.4f} median_s={med:.6f} rss_kb={rss} fwd_s={statistics.median(fwd):.6f} "
          f"bwd_s={statistics.median(bwd):.6f} opt_s={statistics.median(ost):.6f} loss0={loss0:.6f}")
    return 0


def main(argv):
    if len(argv) == 5 and argv[1] == "make":
        make(argv[2], argv[3], int(argv[4]))
        return 0
    if len(argv) == 8 and argv[1] == "run":
        return run(argv[2], int(argv[3]), int(argv[4]), int(argv[5]), int(argv[6]), float(argv[7]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
