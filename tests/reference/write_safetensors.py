#!/usr/bin/python3
"""Independent safetensors writer for sightline's reader test.

Written from the format description only (json + struct, no safetensors
package): u64 little-endian header length, the JSON header, the data section.

usage: write_safetensors.py OUTDIR

Writes into OUTDIR:
  ref_aligned.safetensors    header padded with spaces to 8 bytes, keys in data order
  ref_unaligned.safetensors  no padding (odd header length), keys in reverse data
                             order, raw UTF-8 instead of ASCII escapes
  expected.safetensors       for each tensor of the above, its values as torch
                             converts them: float dtypes as F32 (via .float()),
                             other dtypes unchanged
"""
import json
import math
import struct
import sys

import torch

DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def tensor_bytes(t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: reinterpret the bits
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def write(path, tensors, metadata=None, pad=True, reverse_keys=False):
    """tensors: list of (name, tensor) in data order."""
    entries = []
    offset = 0
    blobs = []
    for name, t in tensors:
        b = tensor_bytes(t)
        entries.append((name, {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                               "data_offsets": [offset, offset + len(b)]}))
        offset += len(b)
        blobs.append(b)
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, e in (reversed(entries) if reverse_keys else entries):
        header[name] = e
    # default separators (", " and ": "); the unpadded file keeps raw UTF-8
    h = json.dumps(header, ensure_ascii=pad).encode("utf-8")
    if pad:
        h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    elif (8 + len(h)) % 2 == 0:
        h += b" "  # make the data section start at an odd offset
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    out = sys.argv[1]
    torch.manual_seed(1234)
    f16_special = torch.tensor([1.0, -2.5, 65504.0, 2.0 ** -24, 2.0 ** -14, -0.0, math.inf,
                                -math.inf, math.nan, 1.0 / 3.0, 1e-6], dtype=torch.float32)
    bf16_special = torch.tensor([1.0, -2.5, 3.3895313892515355e38, 9.183549615799121e-41,
                                 math.inf, -math.inf, math.nan, -0.0, 1.0 / 3.0],
                                dtype=torch.float32)
    tensors = [
        ("f32.matrix", torch.arange(12, dtype=torch.float32).reshape(3, 4) * 0.25 - 1.0),
        ("f16.special", f16_special.half()),
        ("f16.random", torch.randn(5, 7).half()),
        ("bf16.random", torch.randn(4, 3, 2).bfloat16()),
        ("bf16.special", bf16_special.bfloat16()),
        ("f32.empty", torch.zeros(0, 3)),
        ("f32.scalar", torch.tensor(2.5)),
        ("f64.vec", torch.tensor([1.5, -1e300], dtype=torch.float64)),
        ("i64.ids", torch.tensor([49406, 320, -5, 49407], dtype=torch.int64)),
        ("i32.vec", torch.tensor([-7, 2 ** 31 - 1], dtype=torch.int32)),
        ("i16.vec", torch.tensor([-300, 300, 5], dtype=torch.int16)),
        ("i8.vec", torch.tensor([-128, 127], dtype=torch.int8)),
        ("u8.bytes", torch.arange(0, 250, 7, dtype=torch.uint8)),
        ("bool.mask", torch.tensor([True, False, True])),
    ]
    meta = {"format": "pt", "writer": "write_safetensors.py", "note": "caf\u00e9 \u2713"}
    write(f"{out}/ref_aligned.safetensors", tensors, meta, pad=True)
    write(f"{out}/ref_unaligned.safetensors", tensors, meta, pad=False, reverse_keys=True)
    expected = [(n, t.float() if t.is_floating_point() and t.dtype != torch.float64 else t)
                for n, t in tensors]
    write(f"{out}/expected.safetensors", expected, None, pad=True)


if __name__ == "__main__":
    main()
