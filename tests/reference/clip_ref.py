"""A PyTorch CLIP dual encoder written for sightline's parity tests and
benchmarks, from the architecture description (pre-norm ViT image tower with
class token; causal text transformer pooled at the end-of-text token).

It reads and writes safetensors with json + struct (the safetensors package
is not required), builds random-weight checkpoints in the Hugging Face layout
(config.json + model.safetensors) and in the OpenCLIP/OpenAI single-file
layout, and saves reference embeddings as .npy.

usage:
  clip_ref.py cases OUT_DIR     write every parity case under OUT_DIR and a
                                list OUT_DIR/cases.txt ("name path" lines)
  clip_ref.py case NAME OUT_DIR write one case

Weights are held in a canonical dict (names below); hf_names() and
openclip_names() map it to the two file layouts.
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------
# safetensors (json + struct)
# ---------------------------------------------------------------------------

_ST_DTYPES = {"F32": (np.float32, 4), "F16": (np.float16, 2), "BF16": (None, 2),
              "I64": (np.int64, 8), "I32": (np.int32, 4)}


def st_write(path, tensors, dtype="F32", metadata=None):
    """Write {name: float32 torch tensor} as `dtype` (F32/F16/BF16). Returns
    {name: the stored values widened back to float32} so the reference
    computes from exactly the rounded weights."""
    header, blobs, stored, off = {}, [], {}, 0
    for name, t in tensors.items():
        t = t.detach().to(torch.float32).contiguous()
        if t.dtype.is_floating_point and dtype == "F16":
            r = t.to(torch.float16)
            raw = r.numpy().astype("<f2").tobytes()
        elif dtype == "BF16":
            r = t.to(torch.bfloat16)
            raw = r.view(torch.int16).numpy().astype("<i2").tobytes()
        else:
            r = t
            raw = t.numpy().astype("<f4").tobytes()
        stored[name] = r.to(torch.float32)
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    return stored


def st_read(path):
    """{name: float32 torch tensor} of every floating tensor in the file."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        raw = data[base + b:base + e]
        dt = info["dtype"]
        if dt == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = u.view(np.float32)
        elif dt in ("F32", "F16"):
            arr = np.frombuffer(raw, dtype=_ST_DTYPES[dt][0]).astype(np.float32)
        else:
            continue
        out[name] = torch.from_numpy(arr.reshape(info["shape"]).copy())
    return out


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------

class Config:
    """Architecture of one CLIP dual encoder (both towers)."""

    def __init__(self, **kw):
        self.v_width, self.v_layers, self.v_heads, self.v_mlp = 768, 12, 12, 3072
        self.t_width, self.t_layers, self.t_heads, self.t_mlp = 512, 12, 8, 2048
        self.image_size, self.patch, self.ctx, self.vocab, self.embed = 224, 32, 77, 49408, 512
        self.act, self.eps = "quick_gelu", 1e-5
        self.eos, self.pool_argmax = 49407, True
        for k, v in kw.items():
            if not hasattr(self, k):
                raise KeyError(k)
            setattr(self, k, v)

    @property
    def grid(self):
        return self.image_size // self.patch

    @property
    def patches(self):
        return self.grid * self.grid


def activation(x, kind):
    if kind == "quick_gelu":
        return x * torch.sigmoid(1.702 * x)
    if kind == "gelu":
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    if kind == "gelu_tanh":
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    raise ValueError(kind)


def layer_norm(x, w, b, eps):
    return F.layer_norm(x, (x.shape[-1],), w, b, eps)


def block(x, p, pre, heads, act, eps, causal):
    """One pre-norm block on x [n, T, W]."""
    n, T, W = x.shape
    dh = W // heads
    h = layer_norm(x, p[pre + "ln1.w"], p[pre + "ln1.b"], eps)
    q = F.linear(h, p[pre + "q.w"], p[pre + "q.b"]) * (1.0 / math.sqrt(dh))
    k = F.linear(h, p[pre + "k.w"], p[pre + "k.b"])
    v = F.linear(h, p[pre + "v.w"], p[pre + "v.b"])
    q, k, v = (t.view(n, T, heads, dh).transpose(1, 2) for t in (q, k, v))
    s = q @ k.transpose(-1, -2)  # [n, H, T, T]
    if causal:
        mask = torch.full((T, T), float("-inf"), dtype=s.dtype).triu(1)
        s = s + mask
    a = torch.softmax(s, dim=-1) @ v  # [n, H, T, dh]
    a = a.transpose(1, 2).reshape(n, T, W)
    x = x + F.linear(a, p[pre + "o.w"], p[pre + "o.b"])
    h = layer_norm(x, p[pre + "ln2.w"], p[pre + "ln2.b"], eps)
    h = activation(F.linear(h, p[pre + "fc1.w"], p[pre + "fc1.b"]), act)
    return x + F.linear(h, p[pre + "fc2.w"], p[pre + "fc2.b"])


def encode_image(cfg, p, pixels, with_patches=True, patch_tokens="final", region=None,
                 detach_value=False):
    """pixels [n, 3, S, S] -> (global [n, D], patches [n, P, D] or None).
    patch_tokens "final": the last block's output rows; "value": the last
    block's value path, o(v(ln1(x))) with its biases, no attention, residual
    or MLP (both then through the final LN and the projection).
    region: another input side for the patches: the pixels and the position
    grid resized (bicubic, align_corners False) to it (the global output is
    then that pass's, which the caller ignores).
    detach_value: the value path reads a detached ln1(x) (no gradient below
    it through the patches; the trainer's dense objective)."""
    pos = p["v.pos"]
    if region is not None and region != pixels.shape[-1]:
        pixels = F.interpolate(pixels, size=(region, region), mode="bicubic", align_corners=False)
        g0, g1 = cfg.grid, region // cfg.patch
        grid = pos[1:].reshape(g0, g0, -1).permute(2, 0, 1)[None]
        grid = F.interpolate(grid, size=(g1, g1), mode="bicubic", align_corners=False)
        pos = torch.cat([pos[:1], grid[0].permute(1, 2, 0).reshape(g1 * g1, -1)], 0)
    x = F.conv2d(pixels, p["v.patch"], stride=cfg.patch)  # [n, W, g, g]
    x = x.flatten(2).transpose(1, 2)  # [n, P, W]
    cls = p["v.cls"].view(1, 1, -1).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + pos
    x = layer_norm(x, p["v.pre.w"], p["v.pre.b"], cfg.eps)
    value = None
    for i in range(cfg.v_layers):
        if i == cfg.v_layers - 1 and patch_tokens == "value":
            pre = f"v.{i}."
            h = layer_norm(x, p[pre + "ln1.w"], p[pre + "ln1.b"], cfg.eps)
            if detach_value:
                h = h.detach()
            v = F.linear(h, p[pre + "v.w"], p[pre + "v.b"])
            value = F.linear(v, p[pre + "o.w"], p[pre + "o.b"])
        x = block(x, p, f"v.{i}.", cfg.v_heads, cfg.act, cfg.eps, False)
    if not with_patches:
        return layer_norm(x[:, 0], p["v.post.w"], p["v.post.b"], cfg.eps) @ p["v.proj"].t(), None
    y = layer_norm(x, p["v.post.w"], p["v.post.b"], cfg.eps) @ p["v.proj"].t()
    if value is not None:
        pv = layer_norm(value, p["v.post.w"], p["v.post.b"], cfg.eps) @ p["v.proj"].t()
        return y[:, 0], pv[:, 1:]
    return y[:, 0], y[:, 1:]


def pool_positions(cfg, ids):
    if cfg.pool_argmax:
        return ids.argmax(dim=-1)
    hit = ids == cfg.eos
    first = hit.int().argmax(dim=-1)
    return torch.where(hit.any(dim=-1), first, torch.full_like(first, ids.shape[1] - 1))


def encode_text(cfg, p, ids, with_tokens=True):
    """ids [n, ctx] int64 -> (pooled [n, D], tokens [n, ctx, D] or None)."""
    x = p["t.tok"][ids] + p["t.pos"][: ids.shape[1]]
    for i in range(cfg.t_layers):
        x = block(x, p, f"t.{i}.", cfg.t_heads, cfg.act, cfg.eps, True)
    pos = pool_positions(cfg, ids)
    if not with_tokens:
        x = x[torch.arange(ids.shape[0]), pos]
        return layer_norm(x, p["t.final.w"], p["t.final.b"], cfg.eps) @ p["t.proj"].t(), None
    x = layer_norm(x, p["t.final.w"], p["t.final.b"], cfg.eps)
    y = x @ p["t.proj"].t()
    return y[torch.arange(ids.shape[0]), pos], y


# ---------------------------------------------------------------------------
# Random weights and the two file layouts
# ---------------------------------------------------------------------------

def random_params(cfg, seed):
    g = torch.Generator().manual_seed(seed)

    def rn(*shape, std=0.02, mean=0.0):
        return torch.randn(*shape, generator=g) * std + mean

    p = {}
    W, D = cfg.v_width, cfg.embed
    p["v.patch"] = rn(W, 3, cfg.patch, cfg.patch, std=0.05)
    p["v.cls"] = rn(W, std=0.5)
    p["v.pos"] = rn(cfg.patches + 1, W, std=0.2)
    p["v.pre.w"], p["v.pre.b"] = rn(W, std=0.1, mean=1.0), rn(W, std=0.05)
    for tower, width, layers, mlp in (("v", W, cfg.v_layers, cfg.v_mlp),
                                      ("t", cfg.t_width, cfg.t_layers, cfg.t_mlp)):
        for i in range(layers):
            pre = f"{tower}.{i}."
            for ln in ("ln1", "ln2"):
                p[pre + ln + ".w"] = rn(width, std=0.1, mean=1.0)
                p[pre + ln + ".b"] = rn(width, std=0.05)
            for lin in ("q", "k", "v", "o"):
                p[pre + lin + ".w"] = rn(width, width, std=1.0 / math.sqrt(width))
                p[pre + lin + ".b"] = rn(width, std=0.05)
            p[pre + "fc1.w"] = rn(mlp, width, std=1.0 / math.sqrt(width))
            p[pre + "fc1.b"] = rn(mlp, std=0.05)
            p[pre + "fc2.w"] = rn(width, mlp, std=0.5 / math.sqrt(mlp))
            p[pre + "fc2.b"] = rn(width, std=0.05)
    p["v.post.w"], p["v.post.b"] = rn(W, std=0.1, mean=1.0), rn(W, std=0.05)
    p["v.proj"] = rn(D, W, std=1.0 / math.sqrt(W))
    Wt = cfg.t_width
    p["t.tok"] = rn(cfg.vocab, Wt, std=0.5)
    p["t.pos"] = rn(cfg.ctx, Wt, std=0.2)
    p["t.final.w"], p["t.final.b"] = rn(Wt, std=0.1, mean=1.0), rn(Wt, std=0.05)
    p["t.proj"] = rn(D, Wt, std=1.0 / math.sqrt(Wt))
    p["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    return p


_LIN_HF = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
           "o": "self_attn.out_proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2",
           "ln1": "layer_norm1", "ln2": "layer_norm2"}


def hf_names(cfg, p):
    """Canonical dict -> {HF tensor name: tensor}."""
    out = {
        "vision_model.embeddings.patch_embedding.weight": p["v.patch"],
        "vision_model.embeddings.class_embedding": p["v.cls"],
        "vision_model.embeddings.position_embedding.weight": p["v.pos"],
        "vision_model.pre_layrnorm.weight": p["v.pre.w"],
        "vision_model.pre_layrnorm.bias": p["v.pre.b"],
        "vision_model.post_layernorm.weight": p["v.post.w"],
        "vision_model.post_layernorm.bias": p["v.post.b"],
        "visual_projection.weight": p["v.proj"],
        "text_model.embeddings.token_embedding.weight": p["t.tok"],
        "text_model.embeddings.position_embedding.weight": p["t.pos"],
        "text_model.final_layer_norm.weight": p["t.final.w"],
        "text_model.final_layer_norm.bias": p["t.final.b"],
        "text_projection.weight": p["t.proj"],
        "logit_scale": p["logit_scale"],
    }
    for tower, model, layers in (("v", "vision_model", cfg.v_layers), ("t", "text_model", cfg.t_layers)):
        for i in range(layers):
            for short, long in _LIN_HF.items():
                for wb, suffix in (("w", "weight"), ("b", "bias")):
                    out[f"{model}.encoder.layers.{i}.{long}.{suffix}"] = p[f"{tower}.{i}.{short}.{wb}"]
    return out


def openclip_names(cfg, p):
    """Canonical dict -> {OpenCLIP/OpenAI tensor name: tensor}."""
    out = {
        "visual.conv1.weight": p["v.patch"],
        "visual.class_embedding": p["v.cls"],
        "visual.positional_embedding": p["v.pos"],
        "visual.ln_pre.weight": p["v.pre.w"],
        "visual.ln_pre.bias": p["v.pre.b"],
        "visual.ln_post.weight": p["v.post.w"],
        "visual.ln_post.bias": p["v.post.b"],
        "visual.proj": p["v.proj"].t().contiguous(),
        "token_embedding.weight": p["t.tok"],
        "positional_embedding": p["t.pos"],
        "ln_final.weight": p["t.final.w"],
        "ln_final.bias": p["t.final.b"],
        "text_projection": p["t.proj"].t().contiguous(),
        "logit_scale": p["logit_scale"],
    }
    for tower, prefix, layers in (("v", "visual.transformer", cfg.v_layers), ("t", "transformer", cfg.t_layers)):
        for i in range(layers):
            pre, b = f"{tower}.{i}.", f"{prefix}.resblocks.{i}."
            out[b + "ln_1.weight"], out[b + "ln_1.bias"] = p[pre + "ln1.w"], p[pre + "ln1.b"]
            out[b + "attn.in_proj_weight"] = torch.cat([p[pre + "q.w"], p[pre + "k.w"], p[pre + "v.w"]], 0)
            out[b + "attn.in_proj_bias"] = torch.cat([p[pre + "q.b"], p[pre + "k.b"], p[pre + "v.b"]], 0)
            out[b + "attn.out_proj.weight"], out[b + "attn.out_proj.bias"] = p[pre + "o.w"], p[pre + "o.b"]
            out[b + "ln_2.weight"], out[b + "ln_2.bias"] = p[pre + "ln2.w"], p[pre + "ln2.b"]
            out[b + "mlp.c_fc.weight"], out[b + "mlp.c_fc.bias"] = p[pre + "fc1.w"], p[pre + "fc1.b"]
            out[b + "mlp.c_proj.weight"], out[b + "mlp.c_proj.bias"] = p[pre + "fc2.w"], p[pre + "fc2.b"]
    return out


def canonical_from_hf(cfg, t):
    """{HF name: tensor} -> canonical dict."""
    keys = hf_names(cfg, {k: k for k in random_params_keys(cfg)})  # HF name -> canonical key
    return {keys[n]: t[n] for n in keys}


def random_params_keys(cfg):
    keys = ["v.patch", "v.cls", "v.pos", "v.pre.w", "v.pre.b", "v.post.w", "v.post.b", "v.proj",
            "t.tok", "t.pos", "t.final.w", "t.final.b", "t.proj", "logit_scale"]
    for tower, layers in (("v", cfg.v_layers), ("t", cfg.t_layers)):
        for i in range(layers):
            for short in _LIN_HF:
                keys += [f"{tower}.{i}.{short}.w", f"{tower}.{i}.{short}.b"]
    return keys


_ACT_HF = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}


def hf_config(cfg):
    return {
        "architectures": ["CLIPModel"],
        "projection_dim": cfg.embed,
        "logit_scale_init_value": 2.6592,
        "text_config": {
            "hidden_size": cfg.t_width, "intermediate_size": cfg.t_mlp,
            "num_attention_heads": cfg.t_heads, "num_hidden_layers": cfg.t_layers,
            "max_position_embeddings": cfg.ctx, "vocab_size": cfg.vocab,
            "hidden_act": _ACT_HF[cfg.act], "layer_norm_eps": cfg.eps,
            "eos_token_id": 2 if cfg.pool_argmax else cfg.eos, "bos_token_id": 0,
        },
        "vision_config": {
            "hidden_size": cfg.v_width, "intermediate_size": cfg.v_mlp,
            "num_attention_heads": cfg.v_heads, "num_hidden_layers": cfg.v_layers,
            "image_size": cfg.image_size, "patch_size": cfg.patch,
            "hidden_act": _ACT_HF[cfg.act], "layer_norm_eps": cfg.eps,
        },
    }


def load_hf_dir(d):
    """(Config, canonical params) from an HF directory written by write_hf()."""
    with open(os.path.join(d, "config.json")) as f:
        c = json.load(f)
    tc, vc = c["text_config"], c["vision_config"]
    act = {v: k for k, v in _ACT_HF.items()}[vc.get("hidden_act", "quick_gelu")]
    cfg = Config(v_width=vc["hidden_size"], v_layers=vc["num_hidden_layers"],
                 v_heads=vc["num_attention_heads"], v_mlp=vc["intermediate_size"],
                 t_width=tc["hidden_size"], t_layers=tc["num_hidden_layers"],
                 t_heads=tc["num_attention_heads"], t_mlp=tc["intermediate_size"],
                 image_size=vc["image_size"], patch=vc["patch_size"],
                 ctx=tc["max_position_embeddings"], vocab=tc["vocab_size"],
                 embed=c["projection_dim"], act=act, eps=vc.get("layer_norm_eps", 1e-5),
                 eos=tc.get("eos_token_id", 49407), pool_argmax=tc.get("eos_token_id") == 2)
    t = st_read(os.path.join(d, "model.safetensors"))
    return cfg, canonical_from_hf(cfg, t)


def write_openclip(cfg, p, path, dtype, config_json=None):
    named = openclip_names(cfg, p)
    stored = st_write(path, named, dtype)
    if config_json is not None:
        with open(os.path.join(os.path.dirname(path), "config.json"), "w") as f:
            json.dump(config_json, f, indent=1)
    # Back to canonical names, from the rounded values.
    W = {"v": cfg.v_width, "t": cfg.t_width}
    q = {}
    q["v.patch"] = stored["visual.conv1.weight"]
    q["v.cls"] = stored["visual.class_embedding"]
    q["v.pos"] = stored["visual.positional_embedding"]
    q["v.pre.w"], q["v.pre.b"] = stored["visual.ln_pre.weight"], stored["visual.ln_pre.bias"]
    q["v.post.w"], q["v.post.b"] = stored["visual.ln_post.weight"], stored["visual.ln_post.bias"]
    q["v.proj"] = stored["visual.proj"].t()
    q["t.tok"] = stored["token_embedding.weight"]
    q["t.pos"] = stored["positional_embedding"]
    q["t.final.w"], q["t.final.b"] = stored["ln_final.weight"], stored["ln_final.bias"]
    q["t.proj"] = stored["text_projection"].t()
    q["logit_scale"] = stored["logit_scale"]
    for tower, prefix, layers in (("v", "visual.transformer", cfg.v_layers), ("t", "transformer", cfg.t_layers)):
        w = W[tower]
        for i in range(layers):
            pre, b = f"{tower}.{i}.", f"{prefix}.resblocks.{i}."
            q[pre + "ln1.w"], q[pre + "ln1.b"] = stored[b + "ln_1.weight"], stored[b + "ln_1.bias"]
            ipw, ipb = stored[b + "attn.in_proj_weight"], stored[b + "attn.in_proj_bias"]
            for j, lin in enumerate("qkv"):
                q[pre + lin + ".w"], q[pre + lin + ".b"] = ipw[j * w:(j + 1) * w], ipb[j * w:(j + 1) * w]
            q[pre + "o.w"], q[pre + "o.b"] = stored[b + "attn.out_proj.weight"], stored[b + "attn.out_proj.bias"]
            q[pre + "ln2.w"], q[pre + "ln2.b"] = stored[b + "ln_2.weight"], stored[b + "ln_2.bias"]
            q[pre + "fc1.w"], q[pre + "fc1.b"] = stored[b + "mlp.c_fc.weight"], stored[b + "mlp.c_fc.bias"]
            q[pre + "fc2.w"], q[pre + "fc2.b"] = stored[b + "mlp.c_proj.weight"], stored[b + "mlp.c_proj.bias"]
    return q


# ---------------------------------------------------------------------------
# Parity cases
# ---------------------------------------------------------------------------

# name: (layout, storage dtype, config overrides, OpenCLIP config.json or None)
CASES = {
    "hf_f32_p16_h3": ("hf", "F32", dict(v_width=96, v_layers=2, v_heads=3, v_mlp=384, t_width=96, t_layers=2,
                                        t_heads=3, t_mlp=256, image_size=64, patch=16, ctx=16, vocab=300,
                                        embed=40, act="quick_gelu", eos=299, pool_argmax=True), None),
    "hf_f16_p8_gelu": ("hf", "F16", dict(v_width=64, v_layers=3, v_heads=2, v_mlp=160, t_width=48, t_layers=3,
                                         t_heads=4, t_mlp=96, image_size=40, patch=8, ctx=77, vocab=500,
                                         embed=32, act="gelu", eos=7, pool_argmax=False), None),
    "hf_bf16_p32_tanh": ("hf", "BF16", dict(v_width=80, v_layers=4, v_heads=5, v_mlp=200, t_width=64,
                                            t_layers=2, t_heads=1, t_mlp=128, image_size=64, patch=32, ctx=16,
                                            vocab=200, embed=24, act="gelu_tanh", eos=199, pool_argmax=True),
                         None),
    "oc_f32_p16": ("openclip", "F32", dict(v_width=128, v_layers=2, v_heads=2, v_mlp=512, t_width=128,
                                           t_layers=2, t_heads=2, t_mlp=512, image_size=48, patch=16, ctx=77,
                                           vocab=400, embed=64, act="quick_gelu", eos=399, pool_argmax=True),
                   None),
    "oc_bf16_cfg_gelu": ("openclip", "BF16", dict(v_width=96, v_layers=2, v_heads=3, v_mlp=256, t_width=64,
                                                  t_layers=3, t_heads=2, t_mlp=192, image_size=32, patch=8,
                                                  ctx=16, vocab=300, embed=48, act="gelu", eos=299,
                                                  pool_argmax=True),
                         {"embed_dim": 48, "quick_gelu": False,
                          "vision_cfg": {"width": 96, "head_width": 32, "layers": 2, "patch_size": 8,
                                         "image_size": 32},
                          "text_cfg": {"width": 64, "heads": 2, "layers": 3, "context_length": 16,
                                       "vocab_size": 300}}),
}

N_IMAGES, N_TEXTS = 3, 5


def make_tokens(cfg, n, g):
    """Random ids with the end token at varied positions (never earlier)."""
    hi = cfg.vocab - 1 if cfg.pool_argmax else cfg.vocab
    ids = torch.randint(0, hi, (n, cfg.ctx), generator=g)
    if not cfg.pool_argmax:
        ids[ids == cfg.eos] = (cfg.eos + 1) % cfg.vocab
    ends = [cfg.ctx - 1, 1, cfg.ctx // 2, 3, 0][:n]
    while len(ends) < n:
        ends.append(int(torch.randint(0, cfg.ctx, (1,), generator=g)))
    for i, e in enumerate(ends):
        ids[i, e] = cfg.eos
        if not cfg.pool_argmax and i % 2 == 0:
            ids[i, e + 1:] = cfg.eos  # HF pads with the end token
    return ids


def save_npy(d, name, t):
    np.save(os.path.join(d, name), t.detach().numpy().astype(np.float32 if t.is_floating_point() else np.int32))


def write_case(name, out):
    layout, dtype, over, oc_json = CASES[name]
    cfg = Config(**over)
    seed = sum(ord(c) for c in name)
    p = random_params(cfg, seed)
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    if layout == "hf":
        named = hf_names(cfg, p)
        stored = st_write(os.path.join(d, "model.safetensors"), named, dtype, {"format": "pt"})
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(hf_config(cfg), f, indent=1)
        keys = hf_names(cfg, {k: k for k in p})  # HF name -> canonical key
        q = {keys[n]: stored[n] for n in named}
        path = d
    else:
        path = os.path.join(d, "model.safetensors")
        q = write_openclip(cfg, p, path, dtype, oc_json)
    g = torch.Generator().manual_seed(seed + 1)
    pixels = torch.randn(N_IMAGES, 3, cfg.image_size, cfg.image_size, generator=g)
    ids = make_tokens(cfg, N_TEXTS, g)
    qd = {k: v.double() for k, v in q.items()}
    with torch.no_grad():
        gl, pa = encode_image(cfg, qd, pixels.double())
        _, pv = encode_image(cfg, qd, pixels.double(), patch_tokens="value")
        _, pr = encode_image(cfg, qd, pixels.double(), patch_tokens="value",
                             region=cfg.image_size + 2 * cfg.patch)
        tp, tt = encode_text(cfg, qd, ids)
    save_npy(d, "pixels.npy", pixels)
    np.save(os.path.join(d, "tokens.npy"), ids.numpy().astype(np.int32))
    for fn, t in (("img_global.npy", gl), ("img_patches.npy", pa), ("img_patches_value.npy", pv),
                  ("img_patches_region.npy", pr),
                  ("txt_pooled.npy", tp),
                  ("txt_tokens.npy", tt)):
        save_npy(d, fn, t.float())
    return path


def main(argv):
    if len(argv) >= 3 and argv[1] == "cases":
        out = argv[2]
        os.makedirs(out, exist_ok=True)
        torch.set_num_threads(1)
        lines = [f"{name} {write_case(name, out)}" for name in CASES]
        with open(os.path.join(out, "cases.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"clip_ref: wrote {len(lines)} cases under {out}")
        return 0
    if len(argv) >= 4 and argv[1] == "case":
        print(write_case(argv[2], argv[3]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
