#!/usr/bin/python3
"""Reference fixtures for tests/test_image.c (parity mode).

    image_ref.py check        exit 0 when PIL and numpy import
    image_ref.py gen DIR      write fixtures, reference arrays and DIR/manifest.txt

The reference decoder is PIL (plus ImageOps.exif_transpose for EXIF
orientation); alpha is composited on white with the formula sightline
documents, round((c * a + 255 * (255 - a)) / 255), computed here in numpy.
The reference preprocessing is CLIP's torchvision pipeline on PIL images,
written out here because torchvision is not a Debian package:
Resize(size, BICUBIC) -> CenterCrop(size) -> ToTensor -> Normalize(mean, std).
ToTensor/Normalize run in torch when it imports, else in numpy float32
(the same operations).

manifest.txt lines (whitespace separated, paths relative to DIR):
    decode KIND IMAGE REF.npy          KIND: exact | jpeg | webp-lossy
    prep IMAGE SIZE CROP REF.npy       REF: float32 [3, SIZE, SIZE]
"""
import io
import os
import struct
import sys
import zlib

import numpy as np
from PIL import Image, ImageOps

try:
    import torch
except Exception:  # torch is optional
    torch = None

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


# --------------------------------------------------------------------------
# The reference pipeline (torchvision semantics on PIL images)
# --------------------------------------------------------------------------

def tv_resize(img, size):
    """torchvision.transforms.Resize(size) with an int size: the short side
    becomes size, the long side int(size * long / short)."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), Image.BICUBIC)


def tv_center_crop(img, size):
    w, h = img.size
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def to_tensor_normalize(img):
    a = np.array(img.convert("RGB"), dtype=np.uint8, copy=True)
    if torch is not None:
        t = torch.from_numpy(a).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
        mean = torch.as_tensor(MEAN, dtype=torch.float32)[:, None, None]
        std = torch.as_tensor(STD, dtype=torch.float32)[:, None, None]
        return t.sub(mean).div(std).numpy()
    t = a.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    mean = np.array(MEAN, dtype=np.float32)[:, None, None]
    std = np.array(STD, dtype=np.float32)[:, None, None]
    return (t - mean) / std


def clip_preprocess(img, size, crop):
    img = img.convert("RGB")
    if crop:
        img = tv_center_crop(tv_resize(img, size), size)
    elif img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    return np.ascontiguousarray(to_tensor_normalize(img), dtype=np.float32)


# --------------------------------------------------------------------------
# Reference decoding
# --------------------------------------------------------------------------

def over_white(rgba):
    a = rgba[..., 3:4].astype(np.uint32)
    c = rgba[..., :3].astype(np.uint32)
    return ((c * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def ref_rgb(path):
    im = Image.open(path)
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I", "I;16", "I;16B"):  # 16-bit gray: high byte
        g = (np.array(im).astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode in ("P", "L", "RGB") and "transparency" in im.info):
        return over_white(np.array(im.convert("RGBA")))
    return np.array(im.convert("RGB"))


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------

def photo(w, h, seed=0):
    """A smooth picture with edges and some noise, like a photo."""
    rs = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin(x / (w / 6.0 + 1)) * np.cos(y / (h / 4.0 + 1))
    g = 255 * x / max(w - 1, 1)
    b = 255 * y / max(h - 1, 1)
    img = np.stack([r, g, b], axis=2)
    cx, cy = w * 0.6, h * 0.4
    disk = (x - cx) ** 2 + (y - cy) ** 2 < (min(w, h) * 0.25) ** 2
    img[disk] = [250, 30, 40]
    img[(x.astype(int) // 7 + y.astype(int) // 5) % 9 == 0] *= 0.5
    img += rs.normal(0, 6, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def alpha_plane(w, h):
    y, x = np.mgrid[0:h, 0:w]
    a = (x * 255 // max(w - 1, 1)).astype(np.uint8)
    a[: h // 4] = 0
    a[-h // 4:] = 255
    return a


def png_chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def write_png16(path, arr, color_type):
    """A 16-bit PNG written by hand (PIL writes 16 bits for gray only)."""
    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    data = b"\x89PNG\r\n\x1a\n"
    data += png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
    data += png_chunk(b"IDAT", zlib.compress(raw, 6))
    data += png_chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


def gen(d):
    os.makedirs(d, exist_ok=True)
    lines = []

    def decode_case(kind, name):
        ref = name + ".rgb.npy"
        np.save(os.path.join(d, ref), np.ascontiguousarray(ref_rgb(os.path.join(d, name))))
        lines.append(f"decode {kind} {name} {ref}")

    def prep_case(name, size, crop):
        im = Image.open(os.path.join(d, name))
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
            im = Image.fromarray(over_white(np.array(im.convert("RGBA"))))
        ref = f"{name}.prep{size}c{crop}.npy"
        np.save(os.path.join(d, ref), clip_preprocess(im, size, crop))
        lines.append(f"prep {name} {size} {crop} {ref}")

    base = photo(160, 120)
    rgba = np.dstack([base, alpha_plane(160, 120)])

    # PNG: every colour type
    Image.fromarray(base).save(os.path.join(d, "rgb.png"))
    Image.fromarray(rgba, "RGBA").save(os.path.join(d, "rgba.png"))
    Image.fromarray(base).convert("L").save(os.path.join(d, "gray.png"))
    la = np.dstack([np.array(Image.fromarray(base).convert("L")), alpha_plane(160, 120)])
    Image.fromarray(la, "LA").save(os.path.join(d, "gray_alpha.png"))
    Image.fromarray(base).convert("1").save(os.path.join(d, "bilevel.png"))
    pal = Image.fromarray(base).quantize(64)
    pal.save(os.path.join(d, "palette.png"))
    pal.save(os.path.join(d, "palette_trns.png"), transparency=3)
    write_png16(os.path.join(d, "rgb16.png"), base.astype(np.uint16) * 257 + 3, 2)
    write_png16(os.path.join(d, "rgba16.png"), rgba.astype(np.uint16) * 256 + 200, 6)
    g16 = (np.array(Image.fromarray(base).convert("L")).astype(np.uint16) * 251)
    Image.fromarray(g16.astype(np.uint16), "I;16").save(os.path.join(d, "gray16.png"))
    for n in ("rgb.png", "rgba.png", "gray.png", "gray_alpha.png", "bilevel.png", "palette.png",
              "palette_trns.png", "rgb16.png", "rgba16.png", "gray16.png"):
        decode_case("exact", n)

    # WebP
    Image.fromarray(base).save(os.path.join(d, "lossless.webp"), lossless=True)
    Image.fromarray(rgba, "RGBA").save(os.path.join(d, "lossless_alpha.webp"), lossless=True)
    Image.fromarray(base).save(os.path.join(d, "lossy.webp"), quality=80)
    Image.fromarray(rgba, "RGBA").save(os.path.join(d, "lossy_alpha.webp"), quality=80)
    decode_case("exact", "lossless.webp")
    decode_case("exact", "lossless_alpha.webp")
    decode_case("webp-lossy", "lossy.webp")
    decode_case("webp-lossy", "lossy_alpha.webp")

    # JPEG: subsamplings, progressive, grayscale, CMYK, odd sizes
    big = photo(641, 479, seed=1)
    Image.fromarray(base).save(os.path.join(d, "q90.jpg"), quality=90)
    Image.fromarray(base).save(os.path.join(d, "q95_444.jpg"), quality=95, subsampling=0)
    Image.fromarray(big).save(os.path.join(d, "odd_422.jpg"), quality=85, subsampling=1)
    Image.fromarray(big).save(os.path.join(d, "progressive.jpg"), quality=85, progressive=True)
    Image.fromarray(base).convert("L").save(os.path.join(d, "gray.jpg"), quality=90)
    Image.fromarray(base).convert("CMYK").save(os.path.join(d, "cmyk.jpg"), quality=90)
    for n in ("q90.jpg", "q95_444.jpg", "odd_422.jpg", "progressive.jpg", "gray.jpg", "cmyk.jpg"):
        decode_case("jpeg", n)

    # EXIF orientations on a non-square picture
    small = photo(48, 32, seed=2)
    for o in range(1, 9):
        ex = Image.Exif()
        ex[0x0112] = o
        n = f"orient{o}.jpg"
        Image.fromarray(small).save(os.path.join(d, n), quality=92, exif=ex.tobytes())
        decode_case("jpeg", n)

    # preprocessing: sizes and aspect ratios, downscale and upscale (lossless
    # sources so that the comparison isolates the resize)
    for (w, h, size, crop) in [(640, 480, 224, 1), (480, 640, 224, 1), (100, 300, 224, 1),
                               (37, 53, 64, 1), (53, 37, 64, 1), (224, 224, 224, 1),
                               (1000, 667, 336, 1), (250, 250, 224, 1), (225, 301, 224, 1),
                               (7, 400, 32, 1), (1, 1, 8, 1), (300, 200, 224, 0),
                               (53, 37, 64, 0), (224, 100, 224, 0), (800, 600, 224, 0)]:
        n = f"prep_{w}x{h}.png"
        if not os.path.exists(os.path.join(d, n)):
            Image.fromarray(photo(w, h, seed=w * 7 + h)).save(os.path.join(d, n))
        prep_case(n, size, crop)
    # and end to end from JPEG, WebP with alpha and an EXIF-rotated JPEG
    prep_case("odd_422.jpg", 224, 1)
    prep_case("lossy_alpha.webp", 96, 1)
    prep_case("orient6.jpg", 24, 1)

    with open(os.path.join(d, "manifest.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "check":
        return 0
    if len(sys.argv) == 3 and sys.argv[1] == "gen":
        gen(sys.argv[2])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
