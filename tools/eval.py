#!/usr/bin/env -S /usr/bin/python3
"""Quality evaluation for gst-ehatsr: MATLAB bicubic, Y-channel PSNR / SSIM, test sets.

The protocol of the SR papers (EDSR, SwinIR, HAT; see docs/models.md):

* LR = MATLAB ``imresize(HR, 1/s, 'bicubic')`` of the HR cropped to a multiple of ``s``: cubic
  kernel a = -0.5, widened (antialiasing) when downscaling, symmetric padding, rounded to uint8.
  :func:`imresize` reproduces the canonical Set5 LR files (tests/python/test_eval.py).
* PSNR and SSIM on the Y channel (BT.601, 16-235), ``s`` pixels cropped at each border; SSIM is
  the Gaussian 11x11, sigma 1.5 version of Wang et al. (as BasicSR's ``calculate_ssim``).
* The SR output is clamped to [0,1] and rounded to uint8 before measuring.

    tools/eval.py --bicubic --scale 2                   # bicubic baseline, Set5/Set14/Urban100-10
    tools/eval.py --model models/ehat-fast-x2.safetensors
    tools/eval.py --model m.safetensors --sets Set5 --json
    tools/eval.py --model m.safetensors --cli build/ehat-core/ehat --precision bf16 --ensemble 1,8

``--cli`` measures what the C library computes (``ehat upscale``: its tiler, precision and
self-ensemble) instead of the PyTorch reference. Set5 uses its provided LR files; Set14 and Urban100-10 use :func:`imresize` of the HR.
Data: ``--data`` (default ``$EHAT_DATA``, ``$EHAT_SHARED_DATA`` or ``../shared/data`` next to the
repository). PNG IO needs Pillow (Debian ``python3-pil``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = (os.environ.get("EHAT_DATA") or os.environ.get("EHAT_SHARED_DATA")
                or os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data")))
SETS = ("Set5", "Set14", "Urban100-10")

# --------------------------------------------------------------------------------------------
# Image IO
# --------------------------------------------------------------------------------------------


def read_image(path: str) -> np.ndarray:
    """``H×W×3`` uint8 RGB (greyscale and palette images are converted, alpha dropped)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def write_image(path: str, img: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(np.asarray(img, dtype=np.uint8)).save(path)


# --------------------------------------------------------------------------------------------
# MATLAB imresize (bicubic)
# --------------------------------------------------------------------------------------------


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic with a = -0.5 (MATLAB's)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return ((1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2)))


def _contributions(in_len: int, out_len: int, scale: float, antialias: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """MATLAB's ``contributions``: ``(weights [out, P], indices [out, P])`` (0-based, mirrored)."""
    kernel_width = 4.0
    if scale < 1 and antialias:
        kernel_width /= scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    p = int(math.ceil(kernel_width)) + 2
    ind = left[:, None] + np.arange(p, dtype=np.float64)[None, :]
    d = u[:, None] - ind
    if scale < 1 and antialias:
        w = scale * _cubic(d * scale)
    else:
        w = _cubic(d)
    w = w / w.sum(axis=1, keepdims=True)
    # symmetric padding: 1..n, n..1, periodic
    aux = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx = aux[np.mod(ind.astype(np.int64) - 1, 2 * in_len)]
    keep = np.any(w != 0, axis=0)
    return w[:, keep], idx[:, keep]


def _resize_axis(a: np.ndarray, axis: int, out_len: int, scale: float) -> np.ndarray:
    w, idx = _contributions(a.shape[axis], out_len, scale)
    a = np.moveaxis(a, axis, 0)
    out = np.einsum("op,op...->o...", w, a[idx])
    return np.moveaxis(out, 0, axis)


def imresize(img: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB ``imresize(img, scale, 'bicubic')`` (antialiasing on).

    ``img``: ``H×W`` or ``H×W×C``, uint8 or float. Output size ``ceil(H·scale) × ceil(W·scale)``.
    Rows are resized first (MATLAB's order for equal scales). For uint8, as MATLAB's
    ``imresizemex``, each pass is rounded half away from zero and saturated to uint8 (this makes
    the result bit-exact with the canonical Set5 LR files); float input stays float, unrounded.
    """
    is_u8 = img.dtype == np.uint8
    a = img.astype(np.float64)
    h, w = a.shape[:2]
    for axis, n in ((0, int(math.ceil(h * scale))), (1, int(math.ceil(w * scale)))):
        a = _resize_axis(a, axis, n, scale)
        if is_u8:
            a = np.clip(np.floor(a + 0.5), 0, 255)
    return a.astype(np.uint8) if is_u8 else a


def mod_crop(img: np.ndarray, s: int) -> np.ndarray:
    h, w = img.shape[:2]
    return img[: h - h % s, : w - w % s]


def bicubic_lr(hr: np.ndarray, s: int) -> np.ndarray:
    """The canonical LR of ``hr`` (cropped to a multiple of ``s``) at scale ``s``."""
    return imresize(mod_crop(hr, s), 1.0 / s)


# --------------------------------------------------------------------------------------------
# Metrics (Y channel)
# --------------------------------------------------------------------------------------------


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 limited-range luma in [16, 235] (float64) of an RGB uint8/[0,255] image."""
    a = np.asarray(img, dtype=np.float64) / 255.0
    return 16.0 + 65.481 * a[..., 0] + 128.553 * a[..., 1] + 24.966 * a[..., 2]


def _prep(sr: np.ndarray, hr: np.ndarray, crop: int) -> Tuple[np.ndarray, np.ndarray]:
    if sr.shape != hr.shape:
        raise ValueError(f"shape mismatch: {sr.shape} vs {hr.shape}")
    y1, y2 = rgb_to_y(sr), rgb_to_y(hr)
    if crop:
        y1, y2 = y1[crop:-crop, crop:-crop], y2[crop:-crop, crop:-crop]
    return y1, y2


def psnr_y(sr: np.ndarray, hr: np.ndarray, crop: int) -> float:
    y1, y2 = _prep(sr, hr, crop)
    mse = np.mean((y1 - y2) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def _gauss_filter_valid(a: np.ndarray) -> np.ndarray:
    """Separable 11×11 Gaussian (sigma 1.5), 'valid' region (as cv2.filter2D(...)[5:-5, 5:-5])."""
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5 ** 2))
    g /= g.sum()
    h, w = a.shape
    r = sum(g[k] * a[k: h - 10 + k, :] for k in range(11))
    return sum(g[k] * r[:, k: w - 10 + k] for k in range(11))


def ssim_y(sr: np.ndarray, hr: np.ndarray, crop: int) -> float:
    y1, y2 = _prep(sr, hr, crop)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2 = _gauss_filter_valid(y1), _gauss_filter_valid(y2)
    s11 = _gauss_filter_valid(y1 * y1) - mu1 ** 2
    s22 = _gauss_filter_valid(y2 * y2) - mu2 ** 2
    s12 = _gauss_filter_valid(y1 * y2) - mu1 * mu2
    m = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1 ** 2 + mu2 ** 2 + c1) * (s11 + s22 + c2))
    return float(m.mean())


# --------------------------------------------------------------------------------------------
# Test sets
# --------------------------------------------------------------------------------------------


def list_set(name: str, data: str = DEFAULT_DATA) -> List[str]:
    d = os.path.join(data, "eval", name, "HR")
    if not os.path.isdir(d):
        raise FileNotFoundError(f"test set {name!r} not found at {d}")
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.lower().endswith((".png", ".bmp", ".jpg")))


def load_pair(name: str, hr_path: str, s: int, data: str = DEFAULT_DATA) -> Tuple[np.ndarray, np.ndarray]:
    """``(lr, hr)`` uint8 RGB; Set5 uses its provided LR file when there is one."""
    hr = mod_crop(read_image(hr_path), s)
    stem = os.path.splitext(os.path.basename(hr_path))[0]
    lr_path = os.path.join(data, "eval", name, "LR_bicubic", f"X{s}", f"{stem}x{s}.png")
    if os.path.exists(lr_path):
        lr = read_image(lr_path)
    else:
        lr = imresize(hr, 1.0 / s)
    return lr, hr


def bicubic_upscaler(s: int):
    return lambda lr: imresize(lr, float(s))


def model_upscaler(model, threads: Optional[int] = None, ensemble: int = 1):
    """uint8 LR -> uint8 SR with the PyTorch reference (``tools/ehat_ref``); ``ensemble`` > 1:
    its self-ensemble over that many flips/transposes (libehat's ``ensemble``)."""
    import torch

    sys.path.insert(0, HERE)
    from ehat_ref import upscale

    def run(lr: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(lr.astype(np.float32) / 255.0).permute(2, 0, 1)
        dev = next(model.parameters()).device
        y = upscale(model, x.to(dev), ensemble=ensemble).clamp(0, 1)
        return (y.permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8)

    return run


def cli_upscaler(ehat: str, model: str, ensemble: int = 1, precision: str = "fp32",
                 threads: int = 0):
    """uint8 LR -> uint8 SR through the C library: ``ehat upscale`` on the CPU (PNG in, PNG out)."""
    import subprocess
    import tempfile

    def run(lr: np.ndarray) -> np.ndarray:
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = os.path.join(tmp, "lr.png"), os.path.join(tmp, "sr.png")
            write_image(src, lr)
            cmd = [ehat, "upscale", "-m", model, "-b", "cpu", "-p", precision, "-t", str(threads),
                   "--ensemble", str(ensemble), src, dst]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
            return read_image(dst)

    return run


def evaluate(upscaler, s: int, sets: Sequence[str] = SETS, data: str = DEFAULT_DATA,
             progress: bool = False) -> Dict[str, Dict[str, float]]:
    """Mean Y PSNR / SSIM per set: ``{set: {"psnr": .., "ssim": .., "n": ..}}``."""
    res: Dict[str, Dict[str, float]] = {}
    for name in sets:
        ps, ss = [], []
        for p in list_set(name, data):
            lr, hr = load_pair(name, p, s, data)
            sr = upscaler(lr)
            if sr.shape != hr.shape:
                raise ValueError(f"{p}: SR {sr.shape} vs HR {hr.shape}")
            ps.append(psnr_y(sr, hr, s))
            ss.append(ssim_y(sr, hr, s))
            if progress:
                print(f"  {name}/{os.path.basename(p)}: {ps[-1]:.2f} dB {ss[-1]:.4f}", file=sys.stderr)
        res[name] = {"psnr": float(np.mean(ps)), "ssim": float(np.mean(ss)), "n": len(ps)}
    return res


def evaluate_model_file(path: str, sets: Sequence[str] = SETS, data: str = DEFAULT_DATA,
                        device: str = "cpu", progress: bool = False):
    import torch

    sys.path.insert(0, HERE)
    from ehat_ref import load

    model = load(path, dtype=torch.float32).to(device)
    return evaluate(model_upscaler(model), model.cfg.upscale, sets, data, progress), model.cfg.upscale


def format_table(rows: Dict[str, Dict[str, Dict[str, float]]], sets: Sequence[str]) -> str:
    """``rows``: ``{label: evaluate(...)}`` -> a Markdown table."""
    head = "| method | " + " | ".join(f"{s} PSNR / SSIM" for s in sets) + " |"
    sep = "|---|" + "---|" * len(sets)
    lines = [head, sep]
    for label, r in rows.items():
        lines.append(f"| {label} | " + " | ".join(
            f"{r[s]['psnr']:.2f} / {r[s]['ssim']:.4f}" if s in r else "–" for s in sets) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--model", action="append", default=[], help="model file (repeatable)")
    p.add_argument("--bicubic", action="store_true", help="also evaluate bicubic")
    p.add_argument("--scale", type=int, choices=(2, 3, 4), help="scale for --bicubic (default: the model's)")
    p.add_argument("--sets", default=",".join(SETS), help="comma list (default: all)")
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--ensemble", default="1",
                   help="comma list of self-ensemble sizes (1, 2, 4, 8) to evaluate each model with")
    p.add_argument("--cli", metavar="EHAT", help="evaluate through this `ehat` binary (the C library)")
    p.add_argument("--precision", default="fp32", help="with --cli: fp32 or bf16")
    p.add_argument("--json", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true", help="per-image numbers on stderr")
    a = p.parse_args(argv)
    sets = [s for s in a.sets.split(",") if s]
    sys.path.insert(0, HERE)
    if a.threads:
        from ehat_ref.threads import set_threads

        set_threads(a.threads)
    rows: Dict[str, Dict[str, Dict[str, float]]] = {}
    scale = a.scale
    ensembles = [int(e) for e in a.ensemble.split(",") if e]
    if any(e not in (1, 2, 4, 8) for e in ensembles):
        p.error("--ensemble takes 1, 2, 4 or 8")
    for m in a.model:
        # the model is read once; each ensemble size is one more evaluation of it
        if a.cli:
            from ehat_ref import load_file

            s = int(load_file(m)[1]["upscale"])
            upscaler = lambda e, m=m: cli_upscaler(a.cli, m, e, a.precision, a.threads)  # noqa: E731
        else:
            import torch

            from ehat_ref import load

            model = load(m, dtype=torch.float32).to(a.device)
            s = model.cfg.upscale
            upscaler = lambda e, model=model: model_upscaler(model, ensemble=e)  # noqa: E731
        scale = scale or s
        for e in ensembles:
            t0 = time.time()
            r = evaluate(upscaler(e), s, sets, a.data, a.verbose)
            rows[f"{os.path.basename(m)} (x{s})" + (f", ensemble {e}" if e > 1 else "")] = r
            print(f"evaluated {m} (ensemble {e}) in {time.time() - t0:.0f} s", file=sys.stderr)
    if a.bicubic or not a.model:
        s = scale or 4
        rows[f"bicubic (x{s})"] = evaluate(bicubic_upscaler(s), s, sets, a.data, a.verbose)
    if a.json:
        print(json.dumps(rows, indent=1))
    else:
        print(format_table(rows, sets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
