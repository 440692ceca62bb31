#!/usr/bin/env python3
"""Regenerates the fuzzing seed corpora (stdlib only).

    tests/fuzz/make-corpus.py [--golden ../shared/golden] [--out tests/fuzz/corpus]

loader/: models derived from the golden ehat-tiny-x2 and hat-tiny-x2 files:
  * valid-*: complete, loadable models whose tensors all share one data
    region (the format allows overlapping data_offsets), in F16 and BF16.
    A valid model cannot be small: the upsampler's 64-channel convolution
    alone is 256×64×3×3 values, so these are ~290 KiB;
  * trunc-*: the golden files cut inside the header and inside the data
    (≤ 64 KiB each);
  * small hand-made safetensors files: every dtype, scalars, empty tensors,
    special float values, metadata only, and a few degenerate headers.
tiler/: 16-byte geometry records (layout in fuzz-tiler.c's decode()).
"""
import argparse
import json
import os
import struct

DT_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
           "I8": 1, "U8": 1, "BOOL": 1}


def read_st(path):
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    return b, n, json.loads(b[8:8 + n])


def st_bytes(header, data, pad=True):
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def f16(v):
    return struct.pack("<e", v)


def bf16(v):
    return struct.pack("<f", v)[2:]


def shared_model(golden, dtype):
    """All tensors of `golden` as `dtype`, sharing one data region."""
    _, _, hdr = read_st(golden)
    enc = f16 if dtype == "F16" else bf16
    out = {"__metadata__": dict(hdr["__metadata__"], name="fuzz-seed")}
    biggest = 0
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        n = 1
        for d in v["shape"]:
            n *= d
        if v["dtype"] not in ("F32", "F16", "BF16", "F64"):
            out[k] = v          # index buffers: keep, they are ignored
            continue
        out[k] = {"dtype": dtype, "shape": v["shape"], "data_offsets": [0, 2 * n]}
        biggest = max(biggest, 2 * n)
    # small varied weights up front, zeros after (compresses well in git)
    vals = [((i * 37) % 101 - 50) / 500.0 for i in range(2048)]
    data = b"".join(enc(v) for v in vals)
    data += b"\0" * (biggest - len(data))
    # non-float tensors keep their offsets: append their bytes after
    for k, v in out.items():
        if k != "__metadata__" and v["dtype"] not in ("F16", "BF16"):
            a, e = v["data_offsets"]
            v["data_offsets"] = [len(data), len(data) + e - a]
            data += b"\0" * (e - a)
    return st_bytes(out, data)


def small_files():
    files = {}
    specials = [0.0, -0.0, 1.0, -2.5, float("inf"), float("-inf"), float("nan"), 6e-8, 65504.0]
    d = b""
    hdr = {"__metadata__": {"format": "ehat-sr/1", "note": "dtypes"}}

    def add(name, dtype, shape, raw):
        nonlocal d
        hdr[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(d), len(d) + len(raw)]}
        d += raw

    add("f32", "F32", [3, 3], b"".join(struct.pack("<f", v) for v in specials))
    add("f16", "F16", [9], b"".join(f16(v) for v in specials))
    add("bf16", "BF16", [3, 1, 3], b"".join(bf16(v) for v in specials))
    add("f64", "F64", [2], struct.pack("<dd", 1e300, -1e-300))
    add("i64", "I64", [2, 2], struct.pack("<4q", 0, 1, -1, 2 ** 62))
    add("i32", "I32", [1], struct.pack("<i", -7))
    add("i16", "I16", [2], struct.pack("<2h", 1, -1))
    add("i8", "I8", [3], b"\x01\x80\x7f")
    add("u8", "U8", [1, 1, 1, 1], b"\xff")
    add("bool", "BOOL", [2], b"\x00\x01")
    add("scalar", "F32", [], struct.pack("<f", 3.0))
    add("empty", "F32", [0, 5], b"")
    # overlapping data_offsets (allowed): the first four floats of f32
    hdr["alias"] = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}
    files["dtypes.safetensors"] = st_bytes(hdr, d)
    files["metadata-only.safetensors"] = st_bytes(
        {"__metadata__": {"format": "ehat-sr/1", "arch": "ehat", "upscale": "2",
                          "embed_dim": "6", "depths": "[1]", "num_heads": "[2]",
                          "window_size": "4", "compress_ratio": "3", "squeeze_factor": "2",
                          "conv_scale": "0.01", "overlap_ratio": "0.5", "mlp_ratio": "2.0",
                          "img_range": "1.0", "rgb_mean": "[0.4488, 0.4371, 0.404]",
                          "upsampler": "pixelshuffle", "resi_connection": "1conv",
                          "danet": "true"}}, b"")
    files["empty-header.safetensors"] = st_bytes({}, b"")
    files["unpadded.safetensors"] = st_bytes(
        {"x": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]}}, b"\x00\x3c", pad=False)
    files["huge-len.bin"] = struct.pack("<Q", 2 ** 63 + 5) + b"{}"
    files["empty.bin"] = b""
    return files


def tiler_seeds():
    def rec(w, h, scale, win, tile, overlap, batch, blend, flags=0, raw=(0, 0, 0, 0), rwin=0):
        b = struct.pack("<HHBBBBBBB", w - 1, h - 1, scale - 2, win, tile, overlap, batch,
                        blend + 1, flags)
        b += struct.pack("<4b", *raw) + struct.pack("<b", rwin)
        return b
    # window index: 0→1, 1→2, 2→4, 3→8, 4→16, 5→7
    return {
        "whole-frame": rec(37, 21, 2, 3, 0, 16, 0, -1),
        "grid-x2": rec(48, 33, 2, 3, 16, 8, 0, -1),
        "grid-x3-batch1": rec(40, 24, 3, 1, 10, 4, 1, 0),
        "grid-x4-blend": rec(47, 48, 4, 2, 12, 6, 5, 5),
        "large-grid-x4": rec(300, 300, 4, 3, 64, 24, 5, 30, flags=32),
        "large-window16": rec(257, 33, 2, 4, 48, 31, 2, 7, flags=32),
        "odd-window": rec(45, 46, 3, 5, 21, 13, 3, 4),
        "tiny-tiles": rec(40, 40, 2, 0, 1, 0, 8, -1),
        "large-thin": rec(300, 1, 4, 3, 8, 0, 0, -1, flags=32),
        "overlap-too-big": rec(100, 100, 2, 3, 16, 12, 0, -1),
        "negative": rec(50, 50, 2, 3, 0, 0, 0, 0, flags=1, raw=(-8, 4, 0, -1)),
        "bad-blend": rec(50, 50, 2, 3, 0, 0, 0, 0, flags=1, raw=(16, 4, 2, -7)),
        "window0": rec(50, 50, 2, 3, 16, 4, 0, -1, flags=2, rwin=0),
        "scale6": rec(20, 30, 6, 1, 8, 2, 0, -1, flags=4),
        "huge-tile": rec(50, 50, 2, 3, 0, 4, 0, -1, flags=8),
        "oversized": rec(1, 1, 2, 3, 16, 4, 0, -1, flags=16),
        # self-ensemble (byte 15): 8 on a non-square grid, 4 on a whole frame, 3 (refused)
        "ensemble8-grid": rec(45, 30, 3, 3, 16, 8, 2, -1, flags=64, rwin=3),
        "ensemble4-whole": rec(37, 21, 2, 3, 0, 16, 0, -1, flags=64, rwin=2),
        "ensemble-bad": rec(40, 40, 2, 3, 16, 4, 0, -1, flags=128, rwin=3),
    }


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--golden", default=os.path.join(here, "..", "..", "..", "shared", "golden"))
    p.add_argument("--out", default=os.path.join(here, "corpus"))
    a = p.parse_args()
    ld = os.path.join(a.out, "loader")
    td = os.path.join(a.out, "tiler")
    os.makedirs(ld, exist_ok=True)
    os.makedirs(td, exist_ok=True)
    files = small_files()
    e2 = os.path.join(a.golden, "ehat-tiny-x2", "model.safetensors")
    h2 = os.path.join(a.golden, "hat-tiny-x2", "model.safetensors")
    if os.path.exists(e2) and os.path.exists(h2):
        files["valid-ehat-f16.safetensors"] = shared_model(e2, "F16")
        files["valid-hat-bf16.safetensors"] = shared_model(h2, "BF16")
        for name, path in (("ehat", e2), ("hat", h2)):
            b, n, _ = read_st(path)
            files[f"trunc-{name}-header.safetensors"] = b[:8 + n // 2]
            files[f"trunc-{name}-data.safetensors"] = b[:64 * 1024]
    else:
        print(f"make-corpus: no golden models under {a.golden}: small seeds only")
    for k, v in files.items():
        with open(os.path.join(ld, k), "wb") as f:
            f.write(v)
    for k, v in tiler_seeds().items():
        with open(os.path.join(td, k), "wb") as f:
            f.write(v)
    print(f"make-corpus: {len(files)} loader seeds, {len(tiler_seeds())} tiler seeds")


if __name__ == "__main__":
    main()
