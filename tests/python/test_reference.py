"""Tests of the PyTorch reference (tools/ehat_ref), tools/make_model.py and bench/cpu-vs-torch.

Run with Debian's Python (torch 1.13, numpy, python3-pytest):

    /usr/bin/python3 -m pytest -q tests/python

Golden data: $EHAT_GOLDEN_DIR, default ``../shared/golden`` relative to the repository root.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import io
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

from ehat_ref import model as M  # noqa: E402
from ehat_ref import safetensors_io as st  # noqa: E402
import make_model  # noqa: E402

GOLDEN = os.environ.get("EHAT_GOLDEN_DIR") or os.path.normpath(os.path.join(ROOT, "..", "shared", "golden"))
CASES = sorted(d for d in os.listdir(GOLDEN) if os.path.isfile(os.path.join(GOLDEN, d, "sr.safetensors"))) \
    if os.path.isdir(GOLDEN) else []
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def _golden(case):
    d = os.path.join(GOLDEN, case)
    lr = st.load_file(os.path.join(d, "lr.safetensors"))[0]["image"]
    sr = st.load_file(os.path.join(d, "sr.safetensors"))[0]["image"]
    return os.path.join(d, "model.safetensors"), lr, sr


# ---------------------------------------------------------------------------------------------
# Golden parity
# ---------------------------------------------------------------------------------------------


def test_golden_cases_present():
    if not CASES:
        pytest.skip(f"no golden data in {GOLDEN}")
    assert len(CASES) >= 1


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-5), (torch.float32, 1e-4)], ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES)
def test_golden(case, dtype, tol):
    path, lr, sr = _golden(case)
    model = M.load(path, dtype=dtype)
    out = M.upscale(model, lr).double().numpy()
    assert out.shape == sr.shape
    err = float(np.abs(out - sr.astype(np.float64)).max())
    print(f"{case} {dtype}: max abs error {err:.3e}")
    assert err <= tol, f"{case} {dtype}: max abs error {err:.3e} > {tol}"


@pytest.mark.parametrize("case", CASES)
def test_state_dict_names_match_file(case):
    """Module names give exactly the tensor names of the model file (spec §7)."""
    path, _, _ = _golden(case)
    tensors, meta = st.load_file(path)
    model = M.from_config(meta)
    assert set(model.state_dict()) == set(tensors)


@pytest.mark.parametrize("case", [c for c in CASES if c.startswith("hat")])
def test_hat_is_ehat_with_unit_branch_weights(case):
    """EHAT with w0 = 0 and w1 = 1 reproduces HAT (the same code path)."""
    path, lr, _ = _golden(case)
    hat = M.load(path, dtype=torch.float64)
    tensors, meta = st.load_file(path)
    ehat = M.from_config(dict(meta, arch="ehat")).double().eval()
    ehat.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=False)
    a = M.upscale(hat, lr)
    b = M.upscale(ehat, lr)
    assert float((a - b).abs().max()) < 1e-12


def test_branch_weight_counts():
    cfg = M.EhatConfig(arch="ehat", depths=[6] * 12, num_heads=[6] * 12)
    assert cfg.bsa_counts() == (169, 157)
    cfg = M.EhatConfig(arch="ehat", depths=[2, 3], num_heads=[2, 2], embed_dim=16, window_size=8,
                       squeeze_factor=4, compress_ratio=2)
    assert cfg.bsa_counts() == (1 + (2 + 4) + (2 + 6), (5 + 7) + 1)
    model = M.EhatNet(cfg).eval()
    with torch.no_grad():
        model(torch.rand(1, 3, 8, 16))
    assert (model.bsa.i0, model.bsa.i1) == cfg.bsa_counts()


# ---------------------------------------------------------------------------------------------
# Pieces of the pipeline
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("h,w,hp,wp", [(5, 7, 8, 8), (17, 33, 24, 40), (3, 4, 8, 16), (1, 2, 8, 8)])
def test_reflect_pad(h, w, hp, wp):
    x = torch.arange(h * w, dtype=torch.float64).view(1, 1, h, w)
    y = M.reflect_pad(x, hp, wp)
    assert y.shape == (1, 1, hp, wp)
    if hp - h < h and wp - w < w:
        assert torch.equal(y, F.pad(x, (0, wp - w, 0, hp - h), mode="reflect"))
    # periodic mirror: period 2(n-1), a 1-pixel side replicates
    def src(i, n):
        if n == 1:
            return 0
        k = i % (2 * (n - 1))
        return k if k < n else 2 * (n - 1) - k
    for i in range(hp):
        for j in range(wp):
            assert y[0, 0, i, j] == x[0, 0, src(i, h), src(j, w)]


def test_shift_mask_matches_slice_construction():
    """The tensor-op mask equals the original slice-based construction (HAT's calculate_mask)."""
    h, w, ws, s = 24, 16, 8, 4
    img = torch.zeros(1, h, w, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
        for wsl in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    mw = M.window_partition(img, ws).squeeze(-1)
    ref = (mw.unsqueeze(1) - mw.unsqueeze(2))
    ref = ref.masked_fill(ref != 0, -100.0).masked_fill(ref == 0, 0.0)
    assert torch.equal(M.shift_attention_mask(h, w, ws, s, torch.float32, "cpu"), ref)


def test_oca_index_is_torch_negative_indexing():
    ws, wse = 8, 12
    idx = M.relative_position_index_oca(ws, wse)
    side = ws + wse - 1
    assert int(idx.min()) >= 0 and int(idx.max()) < side * side
    # raw index as HAT computes it, then PyTorch negative indexing
    yq, xq = 3, 5
    yk, xk = 0, 1
    raw = (yk - yq + ws - wse + 1) * side + (xk - xq + ws - wse + 1)
    assert raw < 0
    assert int(idx[yq * ws + xq, yk * wse + xk]) == raw % (side * side)


# ---------------------------------------------------------------------------------------------
# Model files
# ---------------------------------------------------------------------------------------------


def test_safetensors_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    tensors = {
        "a.f32": rng.standard_normal((3, 4)).astype(np.float32),
        "b.f64": rng.standard_normal((2, 2, 2)),
        "c.f16": rng.standard_normal((5,)).astype(np.float16),
        "d.i64": np.arange(-6, 6, dtype=np.int64).reshape(3, 4),
        "e.scalar": np.array(2.5, dtype=np.float32),
        "f.empty": np.zeros((0, 3), dtype=np.float32),
    }
    meta = {"format": "ehat-sr/1", "depths": "[6,6]", "name": "naïve ✓"}
    p = str(tmp_path / "t.safetensors")
    st.save_file(p, tensors, meta)
    back, meta2, dtypes = st.load_file(p, with_dtypes=True)
    assert meta2 == meta
    assert dtypes == {"a.f32": "F32", "b.f64": "F64", "c.f16": "F16", "d.i64": "I64", "e.scalar": "F32",
                      "f.empty": "F32"}
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
        assert np.array_equal(back[k], v)
    # data start is 8-byte aligned
    raw = open(p, "rb").read()
    assert (8 + struct.unpack("<Q", raw[:8])[0]) % 8 == 0


def test_safetensors_bf16_and_conversion(tmp_path):
    x = np.array([1.0, -2.5, 3.140625, 1e-3, 65504.0, 1.00390625, 1.01171875, np.inf], dtype=np.float32)
    p = str(tmp_path / "b.safetensors")
    st.save_file(p, {"x": x, "i": np.arange(3)}, dtype="BF16")
    back, _, dtypes = st.load_file(p, with_dtypes=True)
    assert dtypes == {"x": "BF16", "i": "I64"}
    ref = torch.from_numpy(x).to(torch.bfloat16).float().numpy()  # torch rounds to nearest even
    assert np.array_equal(back["x"], ref)
    assert back["x"].dtype == np.float32
    st.save_file(p, {"x": x}, dtype="F16")
    assert np.array_equal(st.load_file(p)[0]["x"], x.astype(np.float16))


def test_safetensors_rejects_bad_files(tmp_path):
    p = str(tmp_path / "bad.safetensors")
    st.save_file(p, {"x": np.zeros((4, 4), np.float32)})
    raw = open(p, "rb").read()
    for bad in (raw[:5], raw[:-4], struct.pack("<Q", 1 << 40) + raw[8:]):
        open(p, "wb").write(bad)
        with pytest.raises(ValueError):
            st.load_file(p)


def test_metadata_round_trip_and_errors():
    cfg = M.EhatConfig(arch="ehat", upscale=3, embed_dim=48, depths=[2, 4], num_heads=[4, 6],
                       window_size=8, squeeze_factor=6, danet=True)
    meta = M.config_to_metadata(cfg)
    assert meta["format"] == "ehat-sr/1" and meta["depths"] == "[2, 4]" and meta["arch"] == "ehat"
    assert M.parse_metadata(meta) == cfg
    bad = dict(meta)
    del bad["window_size"]
    with pytest.raises(KeyError, match="window_size"):
        M.parse_metadata(bad)
    with pytest.raises(ValueError, match="depths"):
        M.parse_metadata(dict(meta, depths="six"))


def test_load_checks_shapes(tmp_path):
    if not CASES:
        pytest.skip("no golden data")
    path, _, _ = _golden(CASES[0])
    tensors, meta = st.load_file(path)
    name = "conv_last.weight"
    tensors[name] = tensors[name][:, :32]
    p = str(tmp_path / "m.safetensors")
    st.save_file(p, tensors, meta)
    with pytest.raises(ValueError, match="conv_last.weight"):
        M.load(p)


def test_load_ignores_index_buffers_and_long_bsa(tmp_path):
    case = next((c for c in CASES if c.startswith("ehat")), None)
    if case is None:
        pytest.skip("no EHAT golden case")
    path, lr, sr = _golden(case)
    tensors, meta = st.load_file(path)
    tensors["layers.0.residual_group.blocks.0.attn.relative_position_index_SA"] = np.zeros((64, 64), np.int64)
    tensors["__branchattentionmodule__.weight_1"] = np.concatenate([tensors["__branchattentionmodule__.weight_1"],
                                                                   np.ones(3, np.float32)])
    p = str(tmp_path / "m.safetensors")
    st.save_file(p, tensors, meta)
    out = M.upscale(M.load(p, dtype=torch.float64), lr).numpy()
    assert np.abs(out - sr).max() < 1e-5
    tensors["__branchattentionmodule__.weight_0"] = tensors["__branchattentionmodule__.weight_0"][:5]
    st.save_file(p, tensors, meta)
    with pytest.raises(ValueError, match="weight_0"):
        M.load(p)


# ---------------------------------------------------------------------------------------------
# make_model, DANet, export
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["ehat-tiny-x2", "hat-tiny-x2"])
def test_make_model_round_trip(tmp_path, preset):
    p = str(tmp_path / "m.safetensors")
    assert make_model.main(["--preset", preset, "--seed", "3", "-o", p]) == 0
    model = M.load(p)
    assert model.cfg == M.EhatConfig(**make_model.PRESETS[preset])
    meta = st.load_file(p)[1]
    assert meta["format"] == "ehat-sr/1"
    x = torch.rand(1, 3, 12, 20, generator=torch.Generator().manual_seed(0))
    out = M.upscale(model, x)
    assert out.shape == (1, 3, 24, 40)
    assert 0.1 < float(out.std()) < 10
    ref = make_model.make(model.cfg, 3)
    assert torch.allclose(M.upscale(ref, x), out, atol=1e-6)


def test_make_model_custom_bf16_danet(tmp_path):
    p = str(tmp_path / "m.safetensors")
    assert make_model.main(["--arch", "ehat", "--embed-dim", "16", "--depths", "1,2", "--heads", "2",
                            "--window", "4", "--scale", "3", "--squeeze-factor", "4", "--danet",
                            "--dtype", "BF16", "-o", p]) == 0
    model = M.load(p)
    assert model.cfg.danet and model.cfg.num_heads == [2, 2] and model.cfg.upscale == 3
    for dt in (torch.float32, torch.float64):
        out = M.upscale(model, torch.rand(1, 3, 9, 6), dtype=dt)
        assert out.shape == (1, 3, 27, 18) and out.dtype == dt and torch.isfinite(out).all()


def test_danet_zero_gamma_is_identity_and_chunking():
    cfg = M.EhatConfig(arch="ehat", embed_dim=16, depths=[1], num_heads=[2], window_size=4,
                       squeeze_factor=4, compress_ratio=2, upscale=2)
    torch.manual_seed(0)
    plain = make_model.make(cfg, 1).double()
    dan = M.EhatNet(M.EhatConfig(**dict(cfg.__dict__, danet=True))).double().eval()
    dan.load_state_dict(plain.state_dict(), strict=False)  # gammas stay 0
    x = torch.rand(1, 3, 8, 12, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(plain(x), dan(x))
        f = torch.randn(2, 16, 5, 7, dtype=torch.float64)
        pam = dan.danet.pam
        full = pam(f)
        pam.chunk_elems = 35 * 3  # 3 query rows at a time
        assert torch.allclose(pam(f), full, atol=1e-12)
        # against the textbook formula
        q = pam.query_conv(f).flatten(2)
        k = pam.key_conv(f).flatten(2)
        v = pam.value_conv(f).flatten(2)
        s = torch.softmax(q.transpose(1, 2) @ k, dim=-1)
        assert torch.allclose(full.flatten(2), v @ s.transpose(1, 2), atol=1e-12)


def test_ape_pads_to_its_grid_and_refuses_larger():
    """HAT runs a model with an absolute position embedding only on inputs that pad to its
    img_size²; here a smaller input is padded up to that grid (and libehat does the same,
    tests/golden/ehat-ape-x2), a larger one is refused with the tile size that would run."""
    cfg = M.EhatConfig(arch="hat", embed_dim=16, depths=[1], num_heads=[2], window_size=4,
                       squeeze_factor=4, compress_ratio=2, upscale=2, ape=True, img_size=12)
    model = make_model.make(cfg, 4).double()
    x = torch.rand(1, 3, 5, 10, dtype=torch.float64)
    with torch.no_grad():
        want = model(M.reflect_pad(x, 12, 12))[..., :10, :20]
    assert torch.equal(M.upscale(model, x), want)
    for h, w in ((13, 4), (4, 13)):
        with pytest.raises(ValueError, match="12×12 tokens.*tiles of at most 12×12"):
            M.upscale(model, torch.rand(1, 3, h, w, dtype=torch.float64))


def test_project_golden_is_made_by_make_golden(tmp_path):
    """tests/golden is what tools/make_golden.py computes with today's reference."""
    import make_golden
    assert make_golden.main(str(tmp_path)) == 0
    for case in make_golden.CASES:
        for f in ("model", "lr", "sr"):
            a = st.load_file(os.path.join(ROOT, "tests", "golden", case, f + ".safetensors"))[0]
            b = st.load_file(os.path.join(tmp_path, case, f + ".safetensors"))[0]
            assert a.keys() == b.keys()
            for k in a:
                np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-6, err_msg=f"{case}/{f}/{k}")


def test_self_ensemble_is_equivariant():
    """The self-ensemble over a group of transforms commutes with every transform of that group
    (padding included: the padded network is just some function), while the plain network does
    not; and each transform is undone by its inverse."""
    cfg = M.EhatConfig(arch="ehat", embed_dim=16, depths=[1], num_heads=[2], window_size=4,
                       squeeze_factor=4, compress_ratio=2, upscale=2)
    torch.manual_seed(0)
    model = make_model.make(cfg, 1).double().eval()
    x = torch.rand(1, 3, 6, 9, dtype=torch.float64)  # not a multiple of the window, not square
    for t in range(8):
        assert torch.equal(M.dihedral(M.dihedral(x, t), t, inverse=True), x)
    # transform 5 mirrors the columns, then transposes: a quarter turn anticlockwise
    assert torch.equal(M.dihedral(x, 5), torch.rot90(x, 1, (-2, -1)))
    for n in (2, 4, 8):
        y = M.upscale(model, x, ensemble=n)
        for t in range(n):
            yt = M.upscale(model, M.dihedral(x, t), ensemble=n)
            assert torch.allclose(yt, M.dihedral(y, t), atol=1e-12), (n, t)
    plain = M.upscale(model, x)
    assert not torch.allclose(M.upscale(model, M.dihedral(x, 1)), M.dihedral(plain, 1), atol=1e-6)
    with pytest.raises(ValueError):
        M.upscale(model, x, ensemble=3)


def test_trace_and_onnx_export():
    cfg = M.EhatConfig(**make_model.PRESETS["ehat-tiny-x2"])
    model = make_model.make(cfg, 0)
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        ref = model(x)
        traced = torch.jit.trace(model, x)
        assert torch.equal(traced(x), ref)
    buf = io.BytesIO()
    torch.onnx.export(model, x, buf, opset_version=17, input_names=["image"], output_names=["sr"])
    assert len(buf.getvalue()) > 100000


# ---------------------------------------------------------------------------------------------
# bench/cpu-vs-torch
# ---------------------------------------------------------------------------------------------

BENCH = os.path.join(ROOT, "bench", "cpu-vs-torch")


def _bench_module():
    loader = importlib.machinery.SourceFileLoader("cpu_vs_torch", BENCH)
    spec = importlib.util.spec_from_loader("cpu_vs_torch", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def test_bench_blas_classification():
    b = _bench_module()
    assert b.classify_blas(["/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblasp-r0.3.21.so",
                            "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3"], "generic") == ("OpenBLAS", True)
    kind, ok = b.classify_blas(["/usr/lib/x86_64-linux-gnu/blas/libblas.so.3"], "generic")
    assert not ok and "reference" in kind
    assert b.classify_blas([], "mkl") == ("MKL", True)


def test_bench_smoke(tmp_path):
    ehat = os.environ.get("EHAT_CLI")
    use_ehat = bool(ehat) and os.access(ehat, os.X_OK)
    out = str(tmp_path / "bench.json")
    cmd = [PYTHON, BENCH, "--smoke", "--threads", "1", "--json", out]
    cmd += ["--ehat", ehat] if use_ehat else ["--torch-only"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode == 3:
        pytest.skip("torch uses the reference BLAS: " + r.stderr.strip().splitlines()[0])
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.load(open(out))
    (res,) = doc["results"]
    assert res["size"] == "32x32" and res["torch_ms"] > 0 and res["torch_rss_bytes"] > 0
    if use_ehat:
        assert res["max_abs_diff"] <= 1e-4
