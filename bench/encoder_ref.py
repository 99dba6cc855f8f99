"""PyTorch side of bench/encoder.c: the same CLIP model (tests/reference/
clip_ref.py), timed under torch.inference_mode, on the CPU in float32 or on a
CUDA device in BF16 or F32.

usage:
  encoder_ref.py make DIR [b32|b16]
      write a random-weight model (HF layout, F32) into DIR: ViT-B/32-shaped,
      or ViT-B/16 (patch 16, 224 px; everything else as B/32)
  encoder_ref.py run DIR image|text BATCH ITERS THREADS [EOT_POS]
                 [--device cpu|cuda[:N]] [--dtype bf16|f32] [--warmup N]
      load only that tower's weights (mmap) and time it.
      CPU (the default): clip_ref's float32 forward, one warm-up batch and
      ITERS timed batches; prints one line
        "per_s=<items/s> median_s=<s> rss_kb=<peak>"
      CUDA: an eager model of the same function written the way PyTorch
      code is usually written (fused qkv Linear, F.scaled_dot_product_attention,
      weights .to(device, dtype), activations in dtype; f32 without TF32),
      timed two ways, each
      WARMUP + ITERS batches with torch.cuda.synchronize() around each:
        host: float32 pixels (int64 ids) on the host -> device -> dtype ->
              forward -> float32 embeddings back on the host (the contract of
              sightline's sl_encoder_encode_*: host in, host out)
        dev:  inputs already on the GPU in dtype, outputs left there
      prints one line
        "per_s=<host items/s> median_s=<s> rss_kb=<peak> dev_per_s=<items/s>
         dev_median_s=<s> gpu_peak_mb=<max_memory_allocated>
         gpu_reserved_mb=<max_memory_reserved> attn=<sdpa|math> torch=<version>"
  encoder_ref.py check [--device cpu|cuda[:N]] [--dtype bf16|f32]
      the eager model above against clip_ref's forward (float32, CPU) on a
      small random model, both towers: max |diff| / max |ref| against 1e-4
      (f32) or 2e-2 (bf16); prints PASS/FAIL, exit 1 on FAIL (makes sure the
      GPU baseline computes the same function as the reference)
"""
import ctypes
import json
import mmap
import os
import resource
import statistics
import struct
import sys
import time

import torch
import torch.nn.functional as F

try:
    import numpy as np
except ImportError:  # a pip torch without numpy: clip_ref imports it but only
    np = None        # uses it in helpers this script does not call
    import types
    sys.modules["numpy"] = types.SimpleNamespace(float32="<f4", float16="<f2", int64="<i8", int32="<i4")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import clip_ref  # noqa: E402

VIT_B32 = dict(v_width=768, v_layers=12, v_heads=12, v_mlp=3072, t_width=512, t_layers=12, t_heads=8,
               t_mlp=2048, image_size=224, patch=32, ctx=77, vocab=49408, embed=512, act="quick_gelu",
               eos=49407, pool_argmax=True)
ARCH_PATCH = {"b32": 32, "b16": 16}


def st_write_f32(path, tensors):
    """{name: tensor} as an F32 safetensors file (numpy-free: raw bytes via
    ctypes; the same bytes clip_ref.st_write(..., "F32") writes)."""
    header, tens, off = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().to(torch.float32).contiguous()
        n = t.numel() * 4
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + n]}
        tens.append(t)
        off += n
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for t in tens:
            if t.numel():
                f.write(ctypes.string_at(t.data_ptr(), t.numel() * 4))


def make(d, arch="b32"):
    if arch not in ARCH_PATCH:
        raise SystemExit(f"encoder_ref.py: unknown arch {arch!r} (b32 or b16)")
    shape = dict(VIT_B32)  # read at call time: bench_util.c updates VIT_B32 first
    if arch != "b32":
        shape["patch"] = ARCH_PATCH[arch]
    cfg = clip_ref.Config(**shape)
    p = clip_ref.random_params(cfg, 1234)
    os.makedirs(d, exist_ok=True)
    st_write_f32(os.path.join(d, "model.safetensors"), clip_ref.hf_names(cfg, p))
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
            if np is not None:
                arr = np.frombuffer(mm, dtype="<f4", count=(e - b) // 4, offset=8 + n + b)
                p[keys[name]] = torch.from_numpy(arr.reshape(info["shape"]).copy())
                del arr
            else:
                buf = bytearray(mm[8 + n + b:8 + n + e])
                p[keys[name]] = torch.frombuffer(buf, dtype=torch.float32).reshape(info["shape"])
        mm.close()
    return cfg, p


# ---------------------------------------------------------------------------
# The eager model for CUDA (and `check`)
# ---------------------------------------------------------------------------

HAVE_SDPA = hasattr(F, "scaled_dot_product_attention")


def eager_params(cfg, p, tower, device, dtype):
    """One tower's canonical params on `device` in `dtype`, q/k/v fused."""
    pref = "v." if tower == "image" else "t."
    layers = cfg.v_layers if tower == "image" else cfg.t_layers
    q = {k: t.to(device=device, dtype=dtype) for k, t in p.items() if k.startswith(pref)}
    for i in range(layers):
        pre = f"{pref}{i}."
        for wb in ("w", "b"):
            q[pre + "qkv." + wb] = torch.cat([q.pop(pre + s + "." + wb) for s in ("q", "k", "v")], 0).contiguous()
    return q


def eager_block(x, p, pre, heads, act, eps, causal):
    n, T, W = x.shape
    dh = W // heads
    h = F.layer_norm(x, (W,), p[pre + "ln1.w"], p[pre + "ln1.b"], eps)
    qkv = F.linear(h, p[pre + "qkv.w"], p[pre + "qkv.b"]).view(n, T, 3, heads, dh).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # [n, H, T, dh]
    if HAVE_SDPA:
        a = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    else:  # torch < 2.0
        s = (q * (dh ** -0.5)) @ k.transpose(-1, -2)
        if causal:
            s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
        a = torch.softmax(s, dim=-1) @ v
    x = x + F.linear(a.transpose(1, 2).reshape(n, T, W), p[pre + "o.w"], p[pre + "o.b"])
    h = F.layer_norm(x, (W,), p[pre + "ln2.w"], p[pre + "ln2.b"], eps)
    h = clip_ref.activation(F.linear(h, p[pre + "fc1.w"], p[pre + "fc1.b"]), act)
    return x + F.linear(h, p[pre + "fc2.w"], p[pre + "fc2.b"])


def eager_image(cfg, p, pixels):
    """pixels [n, 3, S, S] (device, dtype) -> pooled [n, D]."""
    x = F.conv2d(pixels, p["v.patch"], stride=cfg.patch).flatten(2).transpose(1, 2)  # [n, P, W]
    x = torch.cat([p["v.cls"].view(1, 1, -1).expand(x.shape[0], 1, -1), x], dim=1) + p["v.pos"]
    x = F.layer_norm(x, (cfg.v_width,), p["v.pre.w"], p["v.pre.b"], cfg.eps)
    for i in range(cfg.v_layers):
        x = eager_block(x, p, f"v.{i}.", cfg.v_heads, cfg.act, cfg.eps, False)
    x = F.layer_norm(x[:, 0], (cfg.v_width,), p["v.post.w"], p["v.post.b"], cfg.eps)
    return F.linear(x, p["v.proj"])


def eager_text(cfg, p, ids):
    """ids [n, ctx] (device, int64) -> pooled [n, D]."""
    x = p["t.tok"][ids] + p["t.pos"][: ids.shape[1]]
    for i in range(cfg.t_layers):
        x = eager_block(x, p, f"t.{i}.", cfg.t_heads, cfg.act, cfg.eps, True)
    x = x[torch.arange(ids.shape[0], device=ids.device), clip_ref.pool_positions(cfg, ids)]
    x = F.layer_norm(x, (cfg.t_width,), p["t.final.w"], p["t.final.b"], cfg.eps)
    return F.linear(x, p["t.proj"])


DTYPES = {"bf16": torch.bfloat16, "f32": torch.float32}


def exact_f32():
    """F32 on CUDA means F32: no TF32 in matmuls or in the patch conv (cuDNN
    allows it by default), as sightline's cuda-f32 path."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def make_inputs(cfg, tower, batch, eot_pos):
    g = torch.Generator().manual_seed(7)
    if tower == "image":
        return torch.randn(batch, 3, cfg.image_size, cfg.image_size, generator=g)
    ids = torch.randint(0, cfg.vocab - 1, (batch, cfg.ctx), generator=g)
    ids[:, eot_pos] = cfg.vocab - 1
    ids[:, eot_pos + 1:] = 0
    return ids


def run_cpu(d, tower, batch, iters, threads, eot_pos):
    torch.set_num_threads(threads)
    cfg, p = load_tower(d, tower)
    x = make_inputs(cfg, tower, batch, eot_pos)
    if tower == "image":
        def step():
            return clip_ref.encode_image(cfg, p, x, with_patches=False)[0]
    else:
        def step():
            return clip_ref.encode_text(cfg, p, x, with_tokens=False)[0]
    times = []
    with torch.inference_mode():
        step()
        for _ in range(iters):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    med = float(statistics.median(times))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"per_s={batch / med:.4f} median_s={med:.4f} rss_kb={rss}")


def run_cuda(d, tower, batch, iters, threads, eot_pos, device, dtype_name, warmup):
    if not torch.cuda.is_available():
        print(f"encoder_ref.py: torch {torch.__version__} sees no CUDA device", file=sys.stderr)
        return 3
    torch.set_num_threads(threads)
    dev = torch.device(device)
    dtype = DTYPES[dtype_name]
    exact_f32()
    cfg, p = load_tower(d, tower)
    w = eager_params(cfg, p, tower, dev, dtype)
    del p
    host = make_inputs(cfg, tower, batch, eot_pos)  # pageable, as sightline's callers pass theirs
    fwd = eager_image if tower == "image" else eager_text
    if tower == "image":
        on_dev = host.to(dev).to(dtype)

        def step_host():
            return fwd(cfg, w, host.to(dev).to(dtype)).float().cpu()
    else:
        on_dev = host.to(dev)

        def step_host():
            return fwd(cfg, w, host.to(dev)).float().cpu()

    def step_dev():
        return fwd(cfg, w, on_dev)

    def timed(step):
        times = []
        for it in range(warmup + iters):
            torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            step()
            torch.cuda.synchronize(dev)
            if it >= warmup:
                times.append(time.perf_counter() - t0)
        return float(statistics.median(times))

    torch.cuda.reset_peak_memory_stats(dev)
    with torch.inference_mode():
        med_dev = timed(step_dev)
        med_host = timed(step_host)
    peak = torch.cuda.max_memory_allocated(dev) / 1048576.0
    reserved = torch.cuda.max_memory_reserved(dev) / 1048576.0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"per_s={batch / med_host:.4f} median_s={med_host:.5f} rss_kb={rss} "
          f"dev_per_s={batch / med_dev:.4f} dev_median_s={med_dev:.5f} gpu_peak_mb={peak:.1f} "
          f"gpu_reserved_mb={reserved:.1f} attn={'sdpa' if HAVE_SDPA else 'math'} torch={torch.__version__}")
    return 0


def check(device, dtype_name):
    """The eager model against clip_ref (float32, CPU) on a small model."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"encoder_ref.py check: torch {torch.__version__} sees no CUDA device", file=sys.stderr)
        return 3
    dev, dtype = torch.device(device), DTYPES[dtype_name]
    exact_f32()
    cfg = clip_ref.Config(v_width=256, v_layers=2, v_heads=4, v_mlp=1024, t_width=256, t_layers=2, t_heads=4,
                          t_mlp=1024, image_size=96, patch=16, ctx=77, vocab=1000, embed=128)
    p = clip_ref.random_params(cfg, 5)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 3, cfg.image_size, cfg.image_size, generator=g)
    ids = torch.randint(0, cfg.vocab - 1, (6, cfg.ctx), generator=g)
    for r, e in enumerate((76, 0, 3, 17, 40, 75)):
        ids[r, e], ids[r, e + 1:] = cfg.vocab - 1, 0
    tol = 2e-2 if dtype_name == "bf16" else 1e-4
    ok = True
    with torch.inference_mode():
        for tower, ref, got in (
                ("image", lambda: clip_ref.encode_image(cfg, p, x, with_patches=False)[0],
                 lambda: eager_image(cfg, eager_params(cfg, p, "image", dev, dtype), x.to(dev).to(dtype))),
                ("text", lambda: clip_ref.encode_text(cfg, p, ids, with_tokens=False)[0],
                 lambda: eager_text(cfg, eager_params(cfg, p, "text", dev, dtype), ids.to(dev)))):
            a, b = ref(), got().float().cpu()
            rel = float((a - b).abs().max() / a.abs().max())
            res = "PASS" if rel <= tol else "FAIL"
            ok &= rel <= tol
            print(f"torch eager ({'sdpa' if HAVE_SDPA else 'math'}) {device} {dtype_name} {tower}: "
                  f"max rel err {rel:.3e} vs clip_ref f32 cpu (tolerance {tol:g}) {res}")
    return 0 if ok else 1


def parse_opts(args, allowed):
    pos, opts = [], {}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            if a[2:] not in allowed or i + 1 >= len(args):
                raise SystemExit(f"encoder_ref.py: bad option {a}\n{__doc__}")
            opts[a[2:]] = args[i + 1]
            i += 2
        else:
            pos.append(a)
            i += 1
    return pos, opts


def main(argv):
    if len(argv) in (3, 4) and argv[1] == "make":
        make(argv[2], argv[3] if len(argv) == 4 else "b32")
        return 0
    if len(argv) >= 2 and argv[1] == "check":
        _, o = parse_opts(argv[2:], ("device", "dtype"))
        return check(o.get("device", "cpu"), o.get("dtype", "f32"))
    if len(argv) >= 7 and argv[1] == "run":
        pos, o = parse_opts(argv[2:], ("device", "dtype", "warmup"))
        if len(pos) not in (5, 6):
            print(__doc__, file=sys.stderr)
            return 2
        d, tower, batch, iters, threads = pos[0], pos[1], int(pos[2]), int(pos[3]), int(pos[4])
        eot = int(pos[5]) if len(pos) > 5 else 76
        device = o.get("device", "cpu")
        if device == "cpu":
            run_cpu(d, tower, batch, iters, threads, eot)
            return 0
        return run_cuda(d, tower, batch, iters, threads, eot, device, o.get("dtype", "bf16"),
                        int(o.get("warmup", "3")))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
