"""The shipped models (models/*.safetensors): metadata, quality above bicubic, and the C library
(`ehat run`, $EHAT_CLI) against the PyTorch reference (max abs diff <= 1e-4)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))
from ehat_ref import load, load_file, save_file, upscale  # noqa: E402

MODELS = [os.path.join(ROOT, "models", f"ehat-fast-x{s}.safetensors") for s in (2, 4)]
present = [m for m in MODELS if os.path.exists(m)]
params = pytest.mark.parametrize("path", present or [pytest.param(None, marks=pytest.mark.skip("no shipped model"))])


def _test_image(h=40, w=56):
    """A real-looking LR crop: a Set5 image when the shared data is there, else a smooth pattern."""
    try:
        import eval as ev  # needs Pillow

        p = os.path.join(ev.DEFAULT_DATA, "eval", "Set5", "HR", "butterfly.png")
        img = ev.read_image(p)[60: 60 + h, 80: 80 + w]
        return img.astype(np.float32) / 255.0
    except Exception:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        return np.stack([0.5 + 0.4 * np.sin(xx / 3 + c) * np.cos(yy / 5) for c in range(3)], -1)


@params
def test_metadata(path):
    _, meta = load_file(path)
    for k in ("name", "license", "training_data", "iterations", "date", "psnr_set5_y", "ssim_set5_y"):
        assert meta.get(k), f"{path}: metadata {k!r} missing"
    assert meta["license"] == "CC-BY-4.0"


@params
def test_c_matches_reference(path, tmp_path):
    ehat = os.environ.get("EHAT_CLI")
    if not ehat or not os.access(ehat, os.X_OK):
        pytest.skip("EHAT_CLI not set")
    lr = torch.from_numpy(_test_image()).permute(2, 0, 1).unsqueeze(0).contiguous()
    model = load(path, dtype=torch.float64)
    ref = upscale(model, lr.double()).float().numpy()
    save_file(str(tmp_path / "lr.safetensors"), {"image": lr}, {})
    r = subprocess.run([ehat, "run", "-m", path, "-b", "cpu", "-p", "fp32", "-t", "1",
                        "-i", str(tmp_path / "lr.safetensors"), "-o", str(tmp_path / "sr.safetensors")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = load_file(str(tmp_path / "sr.safetensors"))[0]["image"]
    assert out.shape == ref.shape
    d = float(np.abs(out - ref).max())
    assert d <= 1e-4, f"max abs diff {d}"


@params
def test_c_ensemble_matches_reference(path, tmp_path):
    """`ehat run --ensemble 8` against the reference's self-ensemble, on a frame that is neither
    square nor a multiple of the window (each transposed copy is padded on its own)."""
    ehat = os.environ.get("EHAT_CLI")
    if not ehat or not os.access(ehat, os.X_OK):
        pytest.skip("EHAT_CLI not set")
    lr = torch.from_numpy(_test_image(h=36, w=50)).permute(2, 0, 1).unsqueeze(0).contiguous()
    model = load(path, dtype=torch.float64)
    save_file(str(tmp_path / "lr.safetensors"), {"image": lr}, {})
    outs = {}
    for n in (1, 2, 8):
        r = subprocess.run([ehat, "run", "-m", path, "-b", "cpu", "-p", "fp32", "-t", "1", "-e", str(n),
                            "-i", str(tmp_path / "lr.safetensors"), "-o", str(tmp_path / f"sr{n}.safetensors")],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        outs[n] = load_file(str(tmp_path / f"sr{n}.safetensors"))[0]["image"]
        ref = upscale(model, lr.double(), ensemble=n).float().numpy()
        assert outs[n].shape == ref.shape
        d = float(np.abs(outs[n] - ref).max())
        assert d <= 1e-4, f"ensemble {n}: max abs diff {d}"
    # the ensembles are different functions, not the plain output again
    assert float(np.abs(outs[8] - outs[1]).mean()) > 1e-4
    assert float(np.abs(outs[8] - outs[2]).mean()) > 1e-4
    r = subprocess.run([ehat, "run", "-m", path, "-b", "cpu", "-e", "3", "-i", str(tmp_path / "lr.safetensors"),
                        "-o", str(tmp_path / "bad.safetensors")], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "1, 2, 4 or 8" in r.stderr


@params
def test_better_than_bicubic(path):
    ev = pytest.importorskip("eval")
    pytest.importorskip("PIL")
    p = os.path.join(ev.DEFAULT_DATA, "eval", "Set5", "HR", "butterfly.png")
    if not os.path.exists(p):
        pytest.skip("no shared data")
    model = load(path)
    s = model.cfg.upscale
    lr, hr = ev.load_pair("Set5", p, s)
    sr = ev.model_upscaler(model)(lr)
    bic = ev.imresize(lr, float(s))
    assert ev.psnr_y(sr, hr, s) > ev.psnr_y(bic, hr, s) + 0.3
