"""tools/convert: official HAT/EHAT checkpoints -> model files (issue 7, item 2).

Reference models (tools/ehat_ref, random weights) are saved in the official layout
(``convert.official_state_dict``: index buffers, EHAT's repeated branch-weight module) wrapped as
``{'params_ema': sd}``, ``{'params': sd}`` or bare, some with DataParallel's ``module.`` prefix;
then converted and checked: the detected configuration is the true one, and the C library
(``ehat run``, $EHAT_CLI) on the converted file matches the PyTorch reference of the original
module within 1e-4. Broken and foreign checkpoints must be refused with a message naming the
tensors at fault.

Optional: with $EHAT_OFFICIAL_SRC pointing at a folder holding the upstream ``hat_arch.py``
(XPixelGroup/HAT) and/or ``SKDADDYS_Ehat.py`` (notiom/Ehat), their own modules' state dicts are
converted too and their forward compared with the converted file (basicsr and einops stubbed).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))

from ehat_ref import EhatConfig, load, load_file, parse_metadata, save_file, upscale  # noqa: E402
from ehat_ref import convert as C  # noqa: E402
import make_model  # noqa: E402

PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
CONVERT = os.path.join(ROOT, "tools", "convert")
CLI = os.environ.get("EHAT_CLI") or os.path.join(ROOT, "build", "ehat-core", "ehat")
HAVE_CLI = os.path.isfile(CLI) and os.access(CLI, os.X_OK)


def _cfg(**kw) -> EhatConfig:
    base = dict(arch="hat", upscale=2, embed_dim=12, depths=[2, 2], num_heads=[2, 2], window_size=4,
                compress_ratio=3, squeeze_factor=4, conv_scale=0.01, mlp_ratio=2.0)
    base.update(kw)
    return EhatConfig(**base)


# name -> (configuration, wrapper key or "" for bare, 'module.' prefix, LR size)
CASES = {
    "hat-s-like-x2": (_cfg(), "params_ema", False, (13, 11)),
    "hat-x3-mixed-heads": (_cfg(upscale=3, embed_dim=24, depths=[2, 3], num_heads=[3, 6], window_size=8,
                                compress_ratio=6, squeeze_factor=8, mlp_ratio=1.5), "params", True, (13, 11)),
    "hat-x4-overlap-0.25": (_cfg(upscale=4, embed_dim=16, depths=[2], num_heads=[4], window_size=8,
                                 overlap_ratio=0.25, mlp_ratio=2.5, compress_ratio=4, squeeze_factor=8),
                            "", False, (9, 10)),
    "ehat-x2": (_cfg(arch="ehat"), "params_ema", True, (13, 11)),
    "ehat-x4-danet": (_cfg(arch="ehat", upscale=4, embed_dim=16, depths=[1, 2], num_heads=[2, 4],
                           compress_ratio=4, squeeze_factor=8, danet=True), "params", False, (10, 7)),
    "hat-ape-x2": (_cfg(depths=[1], num_heads=[3], ape=True, img_size=8), "", False, (7, 6)),
}


def _model(cfg: EhatConfig, seed: int = 3):
    return make_model.make(dataclasses.replace(cfg), seed)


def _checkpoint(model, key: str, prefix: bool, dtype=None) -> dict:
    sd = C.official_state_dict(model)
    sd = {("module." if prefix else "") + k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
          for k, v in sd.items()}
    return {key: sd} if key else sd


def _lr(h: int, w: int, seed: int = 5) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _run_cli(model_path: str, lr: torch.Tensor, tmp) -> np.ndarray:
    save_file(str(tmp / "lr.safetensors"), {"image": lr.float()}, {})
    r = subprocess.run([CLI, "run", "-m", model_path, "-b", "cpu", "-p", "fp32", "-t", "1",
                        "-i", str(tmp / "lr.safetensors"), "-o", str(tmp / "sr.safetensors")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return load_file(str(tmp / "sr.safetensors"))[0]["image"]


def _convert_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, CONVERT, *map(str, args)], capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------------------------------------
# Round trips: reference model -> official checkpoint -> converter -> C library
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_convert_detects_config_and_matches(case, tmp_path):
    cfg, key, prefix, (h, w) = CASES[case]
    model = _model(cfg)
    ckpt = tmp_path / f"{case}.pth"
    torch.save(_checkpoint(model, key, prefix), ckpt)
    out = tmp_path / f"{case}.safetensors"
    r = _convert_cli(ckpt, out, "--name", case, "--licence", "CC0-1.0")
    assert r.returncode == 0, r.stderr
    print(r.stdout)

    tensors, meta = load_file(str(out))
    # (1) the detected configuration is the true one
    got = parse_metadata(meta)
    assert dataclasses.asdict(got) == dataclasses.asdict(cfg)
    assert meta["name"] == case and meta["license"] == "CC0-1.0"
    assert meta["source_checkpoint"] == ckpt.name
    assert meta["source_state_dict"] == (key or "(bare)")
    # buffers and aliases dropped, the branch weights stored once, nothing else changed
    assert set(tensors) == set(model.state_dict())
    for k, v in model.state_dict().items():
        assert np.array_equal(tensors[k], v.numpy()), k

    lr = _lr(h, w)
    ref = upscale(model.double(), lr.double()).float().numpy()
    mine = upscale(load(str(out), dtype=torch.float64), lr.double()).float().numpy()
    assert np.abs(mine - ref).max() <= 1e-6
    # (2) the C library on the converted file against the original module
    if not HAVE_CLI:
        pytest.skip(f"no ehat CLI at {CLI} (set EHAT_CLI)")
    sr = _run_cli(str(out), lr, tmp_path)
    assert sr.shape == ref.shape
    d = float(np.abs(sr - ref).max())
    print(f"{case}: C vs reference max abs diff {d:.2e}")
    assert d <= 1e-4, f"{case}: max abs diff {d}"


def test_official_layout_of_ehat():
    """The test checkpoints carry what the original saves: both index buffers (the OCA one with
    negative entries) and the branch weights under all 3 + 2·D parents of each group."""
    cfg = CASES["ehat-x2"][0]
    sd = C.official_state_dict(_model(cfg))
    assert sd["relative_position_index_OCA"].min() < 0
    aliases = [k for k in sd if k.endswith("__branchattentionmodule__.weight_0")]
    assert len(aliases) == 1 + sum(3 + 2 * d for d in cfg.depths)
    conv = C.convert_state(sd)
    assert sorted(conv.dropped) == sorted([k for k in sd if "__branchattentionmodule__" in k and not
                                           k.startswith("__")] + ["relative_position_index_SA",
                                                                  "relative_position_index_OCA"])
    assert conv.warnings == []


def test_reference_configurations_detected():
    """HAT-S / HAT / HAT-L / EHAT shapes (without building their weights in the test)."""
    for name, arch, c, depths, cr, sq in C._REFERENCE_MODELS:
        cfg = EhatConfig(arch=arch, upscale=4, embed_dim=c, depths=depths, num_heads=[6] * len(depths),
                         window_size=16, compress_ratio=cr, squeeze_factor=sq, mlp_ratio=2.0)
        assert C.known_model(cfg) == name
    # a small HAT-S shape through the detector: meta tensors cost nothing
    cfg = EhatConfig(arch="hat", upscale=4, embed_dim=144, depths=[6] * 6, num_heads=[6] * 6,
                     window_size=16, compress_ratio=24, squeeze_factor=24, mlp_ratio=2.0)
    shapes = {k: torch.empty(v.shape, device="meta") for k, v in
              C.official_state_dict(make_model.EhatNet(cfg)).items()}
    got = C.detect_config(shapes, bsa=False)
    assert dataclasses.asdict(got) == dataclasses.asdict(cfg)


def test_fp16_keep(tmp_path):
    cfg = CASES["ehat-x2"][0]
    model = _model(cfg)
    ckpt = tmp_path / "half.pth"
    torch.save(_checkpoint(model, "params_ema", False, dtype=torch.float16), ckpt)
    out = tmp_path / "half.safetensors"
    r = _convert_cli(ckpt, out, "--dtype", "keep")
    assert r.returncode == 0, r.stderr
    _, meta, dtypes = load_file(str(out), with_dtypes=True)
    assert set(dtypes.values()) == {"F16"}
    assert meta["source_dtype"] == "F16"
    out32 = tmp_path / "half32.safetensors"
    assert _convert_cli(ckpt, out32).returncode == 0
    assert set(load_file(str(out32), with_dtypes=True)[2].values()) == {"F32"}
    if HAVE_CLI:
        lr = _lr(9, 9)
        ref = upscale(load(str(out), dtype=torch.float64), lr.double()).float().numpy()
        assert float(np.abs(_run_cli(str(out), lr, tmp_path) - ref).max()) <= 1e-4


def test_training_checkpoint_with_config(tmp_path):
    """tools/train.py's checkpoints: EMA weights under 'ema', the configuration beside them."""
    cfg = _cfg(arch="ehat", conv_scale=0.02, img_range=255.0)
    model = _model(cfg)
    raw = {k: v + 1 for k, v in model.state_dict().items()}
    ckpt = {"config": dict(cfg.__dict__), "model": raw, "ema": model.state_dict(), "iter": 7}
    conv = C.convert_state(C.extract_state_dict(ckpt)[0], hints=ckpt["config"])
    assert C.extract_state_dict(ckpt)[1] == "ema"
    assert dataclasses.asdict(conv.config) == dataclasses.asdict(cfg)
    assert conv.assumed["conv_scale"] == "checkpoint config"
    # a stored config that disagrees with the tensors: warning, tensors win; --strict refuses
    path = tmp_path / "train.pth"
    torch.save(dict(ckpt, config=dict(cfg.__dict__, embed_dim=48)), path)
    r = _convert_cli(path, tmp_path / "t.safetensors")
    assert r.returncode == 0 and "embed_dim = 48" in r.stderr
    r = _convert_cli(path, tmp_path / "t.safetensors", "--strict")
    assert r.returncode == 1 and "--strict" in r.stderr and "embed_dim" in r.stderr


def test_options_override_defaults(tmp_path):
    model = _model(_cfg())
    path = tmp_path / "m.pth"
    torch.save({"params": C.official_state_dict(model)}, path)
    out = tmp_path / "m.safetensors"
    r = _convert_cli(path, out, "--img-range", "255", "--rgb-mean", "0.5,0.5,0.5", "--conv-scale", "0.05",
                     "--meta", "training_data=DF2K")
    assert r.returncode == 0, r.stderr
    meta = load_file(str(out))[1]
    assert meta["img_range"] == "255.0" and meta["rgb_mean"] == "[0.5, 0.5, 0.5]"
    assert meta["conv_scale"] == "0.05" and meta["training_data"] == "DF2K"
    r = _convert_cli(path, "--dry-run")
    assert r.returncode == 0 and "hat ×2" in r.stdout


def test_alias_disagreement(tmp_path):
    model = _model(_cfg(arch="ehat"))
    sd = C.official_state_dict(model)
    k = "layers.1.residual_group.blocks.0.__branchattentionmodule__.weight_1"
    sd[k] = sd[k] + 1
    conv = C.convert_state(sd)
    assert any(k in w for w in conv.warnings)
    assert torch.equal(conv.tensors["__branchattentionmodule__.weight_1"], model.state_dict()["__branchattentionmodule__.weight_1"])
    path = tmp_path / "a.pth"
    torch.save(sd, path)
    r = _convert_cli(path, tmp_path / "a.safetensors", "--strict")
    assert r.returncode == 1 and k in r.stderr


# ---------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------


def _hat_sd(**kw):
    return C.official_state_dict(_model(_cfg(**kw)))


def _refused(sd, *needles):
    with pytest.raises(C.ConvertError) as e:
        C.convert_state(sd)
    msg = str(e.value)
    for n in needles:
        assert n in msg, f"{n!r} not in: {msg}"
    return msg


def test_refuses_swinir():
    sd = {k: v for k, v in _hat_sd().items() if ".conv_block." not in k and ".overlap_attn." not in k}
    for l in range(2):
        for i in range(2):
            sd[f"layers.{l}.residual_group.blocks.{i}.attn.relative_position_index"] = C.relative_position_index_sa(4)
    _refused(sd, "SwinIR")


def test_refuses_rrdb():
    sd = {"conv_first.weight": torch.zeros(64, 3, 3, 3), "conv_first.bias": torch.zeros(64),
          "body.0.rdb1.conv1.weight": torch.zeros(32, 64, 3, 3), "conv_body.weight": torch.zeros(64, 64, 3, 3)}
    _refused(sd, "RRDB", "body.0.rdb1.conv1.weight")


def test_refuses_other_networks():
    _refused({"head.0.weight": torch.zeros(64, 3, 3, 3), "body.0.body.0.weight": torch.zeros(64, 64, 3, 3)},
             "not a HAT/EHAT", "conv_first.weight", "head.0.weight")
    sd = {k: v for k, v in _hat_sd().items() if not k.startswith(("conv_before_upsample", "upsample", "conv_last"))}
    _refused(sd, "pixelshuffle")
    sd = {k: v for k, v in _hat_sd().items() if not k.startswith(("conv_before_upsample", "conv_last"))}
    _refused(sd, "pixelshuffledirect")
    sd = {k: v for k, v in _hat_sd().items() if not k.startswith("conv_after_body")}
    _refused(sd, "identity")


def test_refuses_missing_and_unknown_tensors():
    sd = _hat_sd()
    del sd["layers.1.residual_group.blocks.0.mlp.fc2.bias"]
    _refused(sd, "missing", "layers.1.residual_group.blocks.0.mlp.fc2.bias")
    sd = _hat_sd()
    sd["layers.0.residual_group.blocks.0.attn.logit_scale"] = torch.zeros(2)
    sd["extra.weight"] = torch.zeros(3)
    _refused(sd, "unknown", "layers.0.residual_group.blocks.0.attn.logit_scale", "extra.weight")
    sd = _hat_sd()
    sd["norm.weight"] = torch.zeros(13)
    _refused(sd, "'norm.weight' [13] (expected [12])")
    sd = _hat_sd()
    sd["foo.__branchattentionmodule__.weight_0"] = torch.zeros(169)
    _refused(sd, "foo.__branchattentionmodule__.weight_0")


def test_refuses_inconsistent_shapes():
    sd = _hat_sd()
    sd["layers.0.residual_group.blocks.1.attn.relative_position_bias_table"] = torch.zeros(49, 3)
    _refused(sd, "blocks.1.attn.relative_position_bias_table", "one head count per group")
    sd = _hat_sd()
    sd["conv_first.weight"] = torch.zeros(12, 1, 3, 3)
    _refused(sd, "3 input channels")
    sd = _hat_sd(upscale=4)
    sd["upsample.4.weight"], sd["upsample.4.bias"] = torch.zeros(256, 64, 3, 3), torch.zeros(256)
    _refused(sd, "×8")
    sd = _hat_sd()
    sd["layers.0.residual_group.blocks.0.conv_block.cab.0.weight"] = torch.zeros(5, 12, 3, 3)
    _refused(sd, "does not divide embed_dim")
    sd = _hat_sd()
    del sd["layers.1.residual_group.blocks.1.norm1.weight"]
    for k in [k for k in sd if k.startswith("layers.1.residual_group.blocks.0.")]:
        del sd[k]
    _refused(sd, "layers.1.residual_group.blocks.0")
    # a position embedding must cover a square grid on the window grid (libehat refuses others)
    sd = _hat_sd()
    sd["absolute_pos_embed"] = torch.zeros(1, 35, 12)
    _refused(sd, "absolute_pos_embed", "img_size²")
    sd["absolute_pos_embed"] = torch.zeros(1, 36, 12)
    _refused(sd, "img_size 6", "window_size 4")


def test_refuses_bad_buffers_and_values():
    sd = _hat_sd()
    sd["relative_position_index_OCA"] = sd["relative_position_index_OCA"].flip(0)
    _refused(sd, "relative_position_index_OCA", "differs")
    sd = _hat_sd()
    sd["relative_position_index_SA"] = torch.zeros(64, 64, dtype=torch.long)
    _refused(sd, "relative_position_index_SA", "[64, 64]")
    sd = _hat_sd()
    sd["conv_last.bias"] = torch.tensor([0.0, float("nan"), 0.0])
    _refused(sd, "NaN", "conv_last.bias")
    sd = C.official_state_dict(_model(_cfg(arch="ehat")))
    sd["__branchattentionmodule__.weight_0"] = torch.zeros(5)
    _refused(sd, "__branchattentionmodule__.weight_0", "uses 13 values")
    with pytest.raises(C.ConvertError, match="no state dict"):
        C.extract_state_dict({"epoch": 3, "optimizer": {}})


def test_cli_refusal_message(tmp_path):
    sd = _hat_sd()
    del sd["conv_after_body.bias"]
    path = tmp_path / "broken.pth"
    torch.save({"params_ema": sd}, path)
    out = tmp_path / "broken.safetensors"
    r = _convert_cli(path, out)
    assert r.returncode == 1
    assert "refused" in r.stderr and "conv_after_body.bias" in r.stderr
    assert not out.exists()
    r = _convert_cli(tmp_path / "absent.pth", out)
    assert r.returncode == 1 and "no such file" in r.stderr


# ---------------------------------------------------------------------------------------------
# Optional: the upstream code itself
# ---------------------------------------------------------------------------------------------

_STUBS = {
    "basicsr/__init__.py": "",
    "basicsr/utils/__init__.py": "",
    "basicsr/utils/registry.py": "class _R:\n    def register(self):\n        return lambda c: c\nARCH_REGISTRY = _R()\n",
    "basicsr/archs/__init__.py": "",
    "basicsr/archs/arch_util.py": (
        "import torch\n"
        "def to_2tuple(x):\n    return tuple(x) if isinstance(x, (tuple, list)) else (x, x)\n"
        "def trunc_normal_(t, std=1.0, mean=0.0, a=-2.0, b=2.0):\n"
        "    return torch.nn.init.trunc_normal_(t, mean, std, a, b)\n"),
    "einops.py": (
        "def rearrange(x, pattern, **kw):\n"
        "    assert pattern == 'b (nc ch owh oww) nw -> nc (b nw) (owh oww) ch', pattern\n"
        "    b, _, nw = x.shape\n"
        "    nc, ch, oh, ow = kw['nc'], kw['ch'], kw['owh'], kw['oww']\n"
        "    return x.view(b, nc, ch, oh, ow, nw).permute(1, 0, 5, 3, 4, 2).reshape(nc, b * nw, oh * ow, ch)\n"),
}


@pytest.mark.parametrize("module", ["hat_arch", "SKDADDYS_Ehat"])
def test_upstream_code(module, tmp_path, monkeypatch):
    src = os.environ.get("EHAT_OFFICIAL_SRC")
    if not src or not os.path.isfile(os.path.join(src, module + ".py")):
        pytest.skip("set EHAT_OFFICIAL_SRC to a folder with the upstream hat_arch.py / SKDADDYS_Ehat.py")
    for rel, text in _STUBS.items():
        p = tmp_path / "stubs" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    monkeypatch.syspath_prepend(src)
    if importlib.util.find_spec("einops") is None or importlib.util.find_spec("basicsr") is None:
        monkeypatch.syspath_prepend(str(tmp_path / "stubs"))
    mod = importlib.import_module(module)
    torch.manual_seed(0)
    net = mod.HAT(upscale=3, embed_dim=12, depths=(2, 1), num_heads=(2, 3), window_size=4, compress_ratio=3,
                  squeeze_factor=4, mlp_ratio=2.0, upsampler="pixelshuffle", resi_connection="1conv").eval()
    mine = make_model.make(_cfg(arch="ehat" if "Ehat" in module else "hat", upscale=3, depths=[2, 1],
                                num_heads=[2, 3]), 1)
    up = C.official_state_dict(mine)
    assert list(up) == list(net.state_dict())  # the test layout is the upstream layout, in order
    net.load_state_dict(up)
    path = tmp_path / "up.pth"
    torch.save({"params_ema": net.state_dict()}, path)
    out = tmp_path / "up.safetensors"
    assert _convert_cli(path, out).returncode == 0
    lr = _lr(9, 7).double()
    x = torch.nn.functional.pad(lr, (0, 1, 0, 3), "reflect")
    with torch.no_grad():
        ref = net.double()(x)[..., :27, :21].float().numpy()
    assert float(np.abs(upscale(load(str(out), torch.float64), lr).float().numpy() - ref).max()) <= 1e-5
    if HAVE_CLI:
        assert float(np.abs(_run_cli(str(out), lr, tmp_path) - ref).max()) <= 1e-4


class _Evil:
    def __reduce__(self):
        return (print, ("this must not run",))


def test_refuses_code_in_pickle(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"params_ema": _hat_sd(), "payload": _Evil()}, path)
    r = _convert_cli(path, tmp_path / "evil.safetensors")
    assert r.returncode == 1
    assert "builtins.print" in r.stderr and "--trust-pickle" in r.stderr
    assert "this must not run" not in r.stdout
