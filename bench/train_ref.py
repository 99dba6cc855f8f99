"""PyTorch side of bench/train.c: the same CLIP training step with
torch.optim.AdamW, on the checkpoint and batch that `make` writes and
sightline loads.

usage:
  train_ref.py make DIR small|vitb32 BATCH
      write DIR/model/{config.json,model.safetensors} (random weights, F32),
      DIR/pixels.bin (float32 [B, 3, S, S]) and DIR/tokens.bin (int32
      [B, ctx], end tokens at varied positions: clip_ref.make_tokens), and
      print one line "ctx=<n> mean_end=<mean end-token position>"
  train_ref.py run DIR BATCH WARMUP STEPS THREADS LR [DEVICE [PRECISION]]
      DEVICE cpu (default), cuda or cuda:N; PRECISION f32 (default) or amp
      (CUDA only).
      CPU: tests/reference/train_ref.py's loss over clip_ref.py's model
      (float32 autograd); WARMUP untimed then STEPS timed steps (zero_grad,
      forward, backward, AdamW step); print "per_s=<samples/s>
      median_s=<s> rss_kb=<peak> fwd_s=<median forward s> bwd_s=<median
      backward s> opt_s=<median step s> loss0=<loss of the first step>"
      CUDA: the model as PyTorch users write it (fast_loss: fused qkv
      F.linear, F.scaled_dot_product_attention, F.layer_norm; bench/
      encoder_ref.py's eager towers), F32 parameters, pixels and ids moved
      to the device; amp: torch.autocast("cuda", dtype=torch.bfloat16)
      around forward + loss (F32 master parameters; bf16 needs no grad
      scaler); f32: no TF32 (as sightline's cuda-f32). torch.optim.AdamW in
      its default implementation (the output says which). After WARMUP
      steps, three passes of STEPS steps, torch.cuda.synchronize() before
      every time stamp:
        1. inputs on the GPU, stamps at the start and end of each step:
           per_s, median_s
        2. inputs from pinned host memory each step (.to(device,
           non_blocking=True)), as sightline's step takes host arrays:
           host_per_s
        3. inputs on the GPU, stamps between the phases too: fwd_s, bwd_s,
           opt_s
      print the CPU line's fields, then "host_per_s=<samples/s>
      gpu_peak_mb=<max_memory_allocated> gpu_reserved_mb=<max_memory_reserved>
      adamw=<foreach|fused|single-tensor> attn=<sdpa|math> torch=<version>"
  train_ref.py check [DEVICE [PRECISION]]
      fast_loss (on DEVICE in PRECISION) against tests/reference/
      train_ref.py's loss_of (float32, CPU) on the small model, batch 8,
      same weights and inputs: the loss (|diff| <= 1e-5 for f32 on the CPU,
      1e-4 for f32 on CUDA, 3e-2 for amp) and every parameter's gradient
      (max |diff| / max |ref| per tensor, worst one <= 1e-4 for f32;
      printed only for amp; key biases skipped: their gradient is zero in
      exact arithmetic); prints PASS/FAIL, exit 1 on FAIL
"""
import contextlib
import ctypes
import json
import math
import os
import resource
import statistics
import struct
import sys
import time

import torch
import torch.nn.functional as F

import encoder_ref  # noqa: E402  (bench/: the eager towers; numpy-free helpers, a numpy shim)

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


# ---------------------------------------------------------------------------
# Files (numpy-free: a pip torch on the GPU machine may come without it)
# ---------------------------------------------------------------------------

def write_raw(path, t):
    """A contiguous tensor's bytes (little-endian on x86) to path."""
    t = t.contiguous()
    with open(path, "wb") as f:
        f.write(ctypes.string_at(t.data_ptr(), t.numel() * t.element_size()))


def st_read_f32(path):
    """clip_ref.st_read without numpy, for F32 files (those `make` writes)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise SystemExit(f"train_ref.py: {path}: {name}: {info['dtype']} needs numpy")
        b, e = info["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[8 + n + b:8 + n + e]),
                                     dtype=torch.float32).reshape(info["shape"])
    return out


if encoder_ref.np is None:
    clip_ref.st_read = st_read_f32  # load_hf_dir reads through it


def make(d, shape, batch):
    cfg = clip_ref.Config(**SHAPES[shape], act="quick_gelu", pool_argmax=False)
    p = clip_ref.random_params(cfg, 2024)
    p["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    mdir = os.path.join(d, "model")
    os.makedirs(mdir, exist_ok=True)
    encoder_ref.st_write_f32(os.path.join(mdir, "model.safetensors"), clip_ref.hf_names(cfg, p))
    with open(os.path.join(mdir, "config.json"), "w") as f:
        json.dump(clip_ref.hf_config(cfg), f, indent=1)
    g = torch.Generator().manual_seed(2025)
    pixels = torch.randn(batch, 3, cfg.image_size, cfg.image_size, generator=g)
    ids = clip_ref.make_tokens(cfg, batch, g)
    write_raw(os.path.join(d, "pixels.bin"), pixels.float())
    write_raw(os.path.join(d, "tokens.bin"), ids.to(torch.int32))
    ends = clip_ref.pool_positions(cfg, ids).double()
    print(f"ctx={cfg.ctx} mean_end={float(ends.mean()):.2f}")


def load_batch(d, cfg, batch):
    S, T = cfg.image_size, cfg.ctx
    pixels = torch.from_file(os.path.join(d, "pixels.bin"), size=batch * 3 * S * S,
                             dtype=torch.float32).view(batch, 3, S, S)
    ids = torch.from_file(os.path.join(d, "tokens.bin"), size=batch * T,
                          dtype=torch.int32).view(batch, T).long()
    return pixels, ids


def adamw_groups(q):
    decay, plain = [], []
    for k, t in q.items():
        # as train_steps_ref.py: weight matrices only (not embeddings / positions)
        nodecay = t.dim() < 2 or k in ("t.tok", "t.pos", "v.pos")
        (plain if nodecay else decay).append(t)
    return [{"params": decay, "weight_decay": WD}, {"params": plain, "weight_decay": 0.0}]


# ---------------------------------------------------------------------------
# CPU: the parity reference, float32
# ---------------------------------------------------------------------------

def run_cpu(d, batch, warmup, steps, threads, lr):
    torch.set_num_threads(threads)
    cfg, p = clip_ref.load_hf_dir(os.path.join(d, "model"))
    pixels, ids = load_batch(d, cfg, batch)
    q = {k: v.float().clone().requires_grad_(True) for k, v in p.items()}
    del p
    opt = torch.optim.AdamW(adamw_groups(q), lr=lr, betas=BETAS, eps=EPS)
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


# ---------------------------------------------------------------------------
# CUDA: the model as PyTorch users write it
# ---------------------------------------------------------------------------

def fast_params(cfg, p, device):
    """Canonical params -> F32 leaf tensors on device with q/k/v fused into
    one [3W, W] weight and [3W] bias per block (as nn.MultiheadAttention's
    in_proj), the keys encoder_ref's eager towers read."""
    q = {k: t.detach().to(device=device, dtype=torch.float32) for k, t in p.items()}
    for tower, layers in (("v", cfg.v_layers), ("t", cfg.t_layers)):
        for i in range(layers):
            pre = f"{tower}.{i}."
            for wb in ("w", "b"):
                q[pre + "qkv." + wb] = torch.cat([q.pop(pre + s + "." + wb) for s in ("q", "k", "v")], 0)
    return {k: t.contiguous().requires_grad_(True) for k, t in q.items()}


def fast_loss(cfg, q, pixels, ids):
    """tests/reference/train_ref.py's loss_of, written for speed: the
    symmetric InfoNCE of the L2-normalised tower outputs."""
    img = F.normalize(encoder_ref.eager_image(cfg, q, pixels), dim=-1)
    txt = F.normalize(encoder_ref.eager_text(cfg, q, ids), dim=-1)
    s = torch.exp(torch.clamp(q["logit_scale"], max=math.log(100.0)))
    logits = s * img @ txt.t()
    target = torch.arange(img.shape[0], device=img.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def adamw_impl(opt):
    """Which AdamW implementation opt.step() runs."""
    d = opt.defaults
    if d.get("fused"):
        return "fused"
    if d.get("foreach") is not None:
        return "foreach" if d["foreach"] else "single-tensor"
    try:
        from torch.optim.optimizer import _default_to_fused_or_foreach
    except ImportError:  # torch < 2.0: foreach=None meant the single-tensor loop
        return "single-tensor"
    params = [t for g in opt.param_groups for t in g["params"]]
    fused, foreach = _default_to_fused_or_foreach(params, False, False)
    return "fused" if fused else "foreach" if foreach else "single-tensor"


def autocast(precision):
    if precision == "amp":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def run_cuda(d, batch, warmup, steps, threads, lr, device, precision):
    if not torch.cuda.is_available():
        print(f"train_ref.py: torch {torch.__version__} sees no CUDA device", file=sys.stderr)
        return 3
    torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.cuda.set_device(dev)
    if precision == "f32":
        encoder_ref.exact_f32()
    cfg, p = clip_ref.load_hf_dir(os.path.join(d, "model"))
    pixels_host, ids_host = load_batch(d, cfg, batch)
    q = fast_params(cfg, p, dev)
    del p
    pixels, ids = pixels_host.to(dev), ids_host.to(dev)
    pixels_pin, ids_pin = pixels_host.pin_memory(), ids_host.pin_memory()
    opt = torch.optim.AdamW(adamw_groups(q), lr=lr, betas=BETAS, eps=EPS)
    impl = adamw_impl(opt)
    torch.cuda.reset_peak_memory_stats(dev)
    loss0 = None

    def sync_now():
        torch.cuda.synchronize(dev)
        return time.perf_counter()

    def step(from_host, phases):
        """One step; (total, forward, backward, optimizer) seconds."""
        nonlocal loss0
        t0 = sync_now()
        opt.zero_grad()
        if from_host:
            px, tk = pixels_pin.to(dev, non_blocking=True), ids_pin.to(dev, non_blocking=True)
        else:
            px, tk = pixels, ids
        with autocast(precision):
            loss = fast_loss(cfg, q, px, tk)
        t1 = sync_now() if phases else t0
        loss.backward()
        t2 = sync_now() if phases else t0
        opt.step()
        t3 = sync_now()
        v = float(loss)  # after the last stamp
        if not math.isfinite(v):
            raise SystemExit("train_ref.py: non-finite loss")
        if loss0 is None:
            loss0 = v
        return t3 - t0, t1 - t0, t2 - t1, t3 - t2

    for _ in range(warmup):
        step(False, False)
    dev_times = [step(False, False)[0] for _ in range(steps)]
    host_times = [step(True, False)[0] for _ in range(steps)]
    phases = [step(False, True) for _ in range(steps)]
    med, host_med = statistics.median(dev_times), statistics.median(host_times)
    fwd, bwd, ost = (statistics.median(x[i] for x in phases) for i in (1, 2, 3))
    peak = torch.cuda.max_memory_allocated(dev) / 1048576.0
    reserved = torch.cuda.max_memory_reserved(dev) / 1048576.0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"per_s={batch / med:.4f} median_s={med:.6f} rss_kb={rss} fwd_s={fwd:.6f} bwd_s={bwd:.6f} "
          f"opt_s={ost:.6f} loss0={loss0:.6f} host_per_s={batch / host_med:.4f} gpu_peak_mb={peak:.1f} "
          f"gpu_reserved_mb={reserved:.1f} adamw={impl} "
          f"attn={'sdpa' if encoder_ref.HAVE_SDPA else 'math'} torch={torch.__version__}")
    return 0


# ---------------------------------------------------------------------------
# check: fast_loss computes loss_of
# ---------------------------------------------------------------------------

def check(device, precision):
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"train_ref.py check: torch {torch.__version__} sees no CUDA device", file=sys.stderr)
        return 3
    dev = torch.device(device)
    if dev.type == "cuda" and precision == "f32":
        encoder_ref.exact_f32()
    cfg = clip_ref.Config(**SMALL, act="quick_gelu", pool_argmax=False)
    p = clip_ref.random_params(cfg, 2024)
    p["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    g = torch.Generator().manual_seed(2025)
    B = 8
    pixels = torch.randn(B, 3, cfg.image_size, cfg.image_size, generator=g)
    ids = clip_ref.make_tokens(cfg, B, g)
    ref_p = {k: v.clone().requires_grad_(True) for k, v in p.items()}
    ref = train_ref.loss_of(cfg, ref_p, pixels, ids)
    ref.backward()
    q = fast_params(cfg, p, dev)
    with autocast(precision):
        got = fast_loss(cfg, q, pixels.to(dev), ids.to(dev))
    got.backward()
    diff = abs(float(got) - float(ref))
    tol = 3e-2 if precision == "amp" else 1e-4 if dev.type == "cuda" else 1e-5
    ok = diff <= tol
    print(f"loss: fast {float(got):.8f} ({device} {precision}), loss_of {float(ref):.8f} (cpu f32): "
          f"|diff| {diff:.3e} (tolerance {tol:g}) {'PASS' if ok else 'FAIL'}")
    worst, worst_name, n = 0.0, "", 0
    for k, t in ref_p.items():
        if k.endswith(".k.b"):
            continue  # zero in exact arithmetic (softmax ignores a shift of all keys): noise only
        w = k.rsplit(".", 2)
        if len(w) == 3 and w[1] in ("q", "k", "v"):
            j = "qkv".index(w[1])
            fused = q[f"{w[0]}.qkv.{w[2]}"].grad.float().cpu()
            rows = fused.shape[0] // 3
            mine = fused[j * rows:(j + 1) * rows]
        else:
            mine = q[k].grad.float().cpu()
        err = float((mine - t.grad).abs().max() / t.grad.abs().max().clamp_min(1e-30))
        n += 1
        if err > worst:
            worst, worst_name = err, k
    gtol = 1e-4
    gok = precision == "amp" or worst <= gtol
    verdict = "(amp: not judged)" if precision == "amp" else f"(tolerance {gtol:g}) {'PASS' if gok else 'FAIL'}"
    print(f"gradients ({n} tensors; key biases skipped): worst max|diff|/max|ref| {worst:.3e} ({worst_name}) {verdict}")
    print(f"train_ref check {device} {precision} attn={'sdpa' if encoder_ref.HAVE_SDPA else 'math'}: "
          f"{'PASS' if ok and gok else 'FAIL'}")
    return 0 if ok and gok else 1


def main(argv):
    if len(argv) == 5 and argv[1] == "make":
        make(argv[2], argv[3], int(argv[4]))
        return 0
    if 8 <= len(argv) <= 10 and argv[1] == "run":
        device = argv[8] if len(argv) > 8 else "cpu"
        precision = argv[9] if len(argv) > 9 else "f32"
        args = (argv[2], int(argv[3]), int(argv[4]), int(argv[5]), int(argv[6]), float(argv[7]))
        if device == "cpu" and precision == "f32":
            return run_cpu(*args)
        if device.startswith("cuda") and precision in ("f32", "amp"):
            return run_cuda(*args, device, precision)
    if 2 <= len(argv) <= 4 and argv[1] == "check":
        device = argv[2] if len(argv) > 2 else "cpu"
        precision = argv[3] if len(argv) > 3 else "f32"
        if precision in ("f32", "amp") and (device == "cpu" or device.startswith("cuda")) and \
                not (device == "cpu" and precision == "amp"):
            return check(device, precision)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
