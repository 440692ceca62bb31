"""tools/train.py smoke test: a few iterations of a tiny model, resume, metadata."""

import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))
pytest.importorskip("PIL")
import eval as ev  # noqa: E402
from ehat_ref import load, load_file  # noqa: E402


def test_train_smoke(tmp_path):
    rng = np.random.default_rng(0)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(2):
        yy, xx = np.mgrid[0:72, 0:80]
        img = 127 + 100 * np.sin(xx / (3 + i))[..., None] * np.cos(yy / 4)[..., None] + rng.normal(0, 5, (72, 80, 3))
        ev.write_image(str(imgs / f"{i}.png"), np.clip(img, 0, 255).astype(np.uint8))
    out = str(tmp_path / "m.safetensors")
    base = [sys.executable, os.path.join(ROOT, "tools", "train.py"), "--embed-dim", "12", "--depths", "1",
            "--heads", "2", "--squeeze-factor", "4", "--patch", "16", "--batch", "2", "--threads", "1",
            "--train", str(imgs), "--cache", str(tmp_path / "cache"), "--eval-sets", "", "-o", out]
    r = subprocess.run(base + ["--iters", "3"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(base + ["--iters", "5", "--resume"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stderr and "iteration 3" in r.stderr
    _, meta = load_file(out)
    assert meta["iterations"] == "5" and meta["license"] == "CC-BY-4.0" and meta["name"] == "m"
    m = load(out)
    assert m.cfg.embed_dim == 12 and m.cfg.upscale == 2
