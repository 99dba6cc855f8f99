"""PyTorch side of bench/encoder.c: the same CLIP model (tests/reference/
clip_ref.py) in float32, timed under torch.inference_mode.

usage:
  encoder_ref.py make DIR
      write a ViT-B/32-shaped random-weight model (HF layout, F32) into DIR
  encoder_ref.py run DIR image|text BATCH ITERS THREADS [EOT_POS]
      load only that tower's weights (mmap), run one warm-up batch and ITERS
      timed batches, print one line: "per_s=<items/s> median_s=<s> rss_kb=<peak>"
"""
import mmap
import json
import os
import resource
import struct
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import clip_ref  # noqa: E402

VIT_B32 = dict(v_width=768, v_layers=12, v_heads=12, v_mlp=3072, t_width=512, t_layers=12, t_heads=8,
               t_mlp=2048, image_size=224, patch=32, ctx=77, vocab=49408, embed=512, act="quick_gelu",
               eos=49407, pool_argmax=True)


def make(d):
    cfg = clip_ref.Config(**VIT_B32)
    p = clip_ref.random_params(cfg, 1234)
    os.makedirs(d, exist_ok=True)
    clip_ref.st_write(os.path.join(d, "model.safetensors"), clip_ref.hf_names(cfg, p), "F32")
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(clip_ref.hf_config(cfg), f, indent=1)


def load_tower(d, tower):
    """(Config, canonical params of one tower) read through mmap."""
    with open(os.path.join(d, "config.json")) as f:
        c = json.load(f)
    tc, vc = c["text_config"], c["vision_config"]
    cfg = clip_ref.Config(v_width=vc["hidden_size"], v_layers=vc["num_hidden_layers"],
                          v_heads=vc["num_attention_heads"], v_mlp=vc["intermediate_size"],
                          t_width=tc["hidden_size"], t_layers=tc["num_hidden_layers"],
                          t_heads=tc["num_attention_heads"], t_mlp=tc["intermediate_size"],
                          image_size=vc["image_size"], patch=vc["patch_size"],
                          ctx=tc["max_position_embeddings"], vocab=tc["vocab_size"], embed=c["projection_dim"],
                          act="quick_gelu", pool_argmax=tc.get("eos_token_id") == 2)
    keys = clip_ref.hf_names(cfg, {k: k for k in clip_ref.random_params_keys(cfg)})  # HF name -> key
    with open(os.path.join(d, "model.safetensors"), "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        (n,) = struct.unpack("<Q", mm[:8])
        header = json.loads(mm[8:8 + n])
        p = {}
        for name, info in header.items():
            if name not in keys or not keys[name].startswith("v." if tower == "image" else "t."):
                continue
            b, e = info["data_offsets"]
            arr = np.frombuffer(mm, dtype="<f4", count=(e - b) // 4, offset=8 + n + b)
            p[keys[name]] = torch.from_numpy(arr.reshape(info["shape"]).copy())
            del arr
        mm.close()
    return cfg, p


def run(d, tower, batch, iters, threads, eot_pos):
    torch.set_num_threads(threads)
    cfg, p = load_tower(d, tower)
    g = torch.Generator().manual_seed(7)
    if tower == "image":
        x = torch.randn(batch, 3, cfg.image_size, cfg.image_size, generator=g)

        def step():
            return clip_ref.encode_image(cfg, p, x, with_patches=False)[0]
    else:
        ids = torch.randint(0, cfg.vocab - 1, (batch, cfg.ctx), generator=g)
        ids[:, eot_pos] = cfg.vocab - 1
        ids[:, eot_pos + 1:] = 0

        def step():
            return clip_ref.encode_text(cfg, p, ids, with_tokens=False)[0]
    times = []
    with torch.inference_mode():
        step()
        for _ in range(iters):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"per_s={batch / med:.4f} median_s={med:.4f} rss_kb={rss}")


def main(argv):
    if len(argv) == 3 and argv[1] == "make":
        make(argv[2])
        return 0
    if len(argv) >= 7 and argv[1] == "run":
        eot = int(argv[7]) if len(argv) > 7 else 76
        run(argv[2], argv[3], int(argv[4]), int(argv[5]), int(argv[6]), eot)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
