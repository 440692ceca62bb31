"""tools/eval.py: MATLAB bicubic reproduces the canonical Set5 LR files; metrics sanity."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
pytest.importorskip("PIL")
import eval as ev  # noqa: E402

SET5 = os.path.join(ev.DEFAULT_DATA, "eval", "Set5")
need_data = pytest.mark.skipif(not os.path.isdir(SET5), reason=f"no test data at {SET5}")


@need_data
@pytest.mark.parametrize("s", [2, 3, 4])
def test_imresize_reproduces_set5_lr(s):
    for p in ev.list_set("Set5"):
        stem = os.path.splitext(os.path.basename(p))[0]
        ref = ev.read_image(os.path.join(SET5, "LR_bicubic", f"X{s}", f"{stem}x{s}.png"))
        lr = ev.bicubic_lr(ev.read_image(p), s)
        assert lr.shape == ref.shape, stem
        d = np.abs(lr.astype(np.int32) - ref)
        assert d.max() <= 1, f"{stem} x{s}: max diff {d.max()}"
        assert (d == 0).mean() >= 0.99, f"{stem} x{s}: only {(d == 0).mean():.4f} identical"


def test_imresize_float_and_sizes():
    rng = np.random.default_rng(0)
    img = rng.random((13, 10, 3))
    assert ev.imresize(img, 0.5).shape == (7, 5, 3)
    assert ev.imresize(img, 2.0).shape == (26, 20, 3)
    const = np.full((9, 9), 0.3)
    np.testing.assert_allclose(ev.imresize(const, 1 / 3), 0.3, atol=1e-12)
    np.testing.assert_allclose(ev.imresize(const, 4.0), 0.3, atol=1e-12)


def test_metrics():
    rng = np.random.default_rng(1)
    hr = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    assert ev.psnr_y(hr, hr, 2) == float("inf")
    assert ev.ssim_y(hr, hr, 2) == pytest.approx(1.0)
    noisy = np.clip(hr.astype(int) + rng.integers(-3, 4, hr.shape), 0, 255).astype(np.uint8)
    p = ev.psnr_y(noisy, hr, 2)
    assert 35 < p < 60
    assert 0 < ev.ssim_y(noisy, hr, 2) < 1
    # Y is BT.601 limited range
    assert ev.rgb_to_y(np.zeros((1, 1, 3))) == pytest.approx(16.0)
    assert ev.rgb_to_y(np.full((1, 1, 3), 255.0)) == pytest.approx(235.0)


@need_data
def test_bicubic_set5_x4_matches_published():
    r = ev.evaluate(ev.bicubic_upscaler(4), 4, ["Set5"])
    assert r["Set5"]["psnr"] == pytest.approx(28.42, abs=0.02)


@need_data
def test_cli_path_matches_reference_and_ensemble_gains():
    """--cli measures the C library: the same Set5 PSNR as the PyTorch reference (uint8 outputs
    may differ by a rounding), and the self-ensemble of 8 scores higher than the plain model."""
    torch = pytest.importorskip("torch")  # noqa: F841
    ehat = os.environ.get("EHAT_CLI")
    if not ehat or not os.access(ehat, os.X_OK):
        pytest.skip("EHAT_CLI not set")
    model = os.path.join(os.path.dirname(ev.HERE), "models", "ehat-fast-x2.safetensors")
    ref, _ = ev.evaluate_model_file(model, ["Set5"])
    c1 = ev.evaluate(ev.cli_upscaler(ehat, model, 1, threads=1), 2, ["Set5"])
    c8 = ev.evaluate(ev.cli_upscaler(ehat, model, 8, threads=1), 2, ["Set5"])
    assert c1["Set5"]["psnr"] == pytest.approx(ref["Set5"]["psnr"], abs=0.01)
    assert c8["Set5"]["psnr"] > c1["Set5"]["psnr"] + 0.1
    with pytest.raises(RuntimeError, match="1, 2, 4 or 8"):
        ev.cli_upscaler(ehat, model, 3)(np.zeros((8, 8, 3), np.uint8))
