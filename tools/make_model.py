#!/usr/bin/env -S /usr/bin/python3
"""Write a random-weight HAT/EHAT model in the project's model format (DESIGN.md §2).

Weights are random like the golden data's: PyTorch's default initialisation (seeded), then every
linear/conv weight is redrawn from N(0, 1/fan_in) (PyTorch's default has a third of that variance
and gives outputs of std ~0.08; this gives ~0.6, like the golden data, without exploding even for
HAT-L depth), and every LayerNorm weight/bias, every bias and every relative-position bias table
gets small normal noise, so that no term of the network is trivially zero or one; EHAT's branch
weights are weight_0 ~ N(0,0.1), weight_1 ~ 1 + N(0,0.1). The output is O(1), not a picture.

    tools/make_model.py --preset hat-s-x4 -o hat-s-x4.safetensors
    tools/make_model.py --arch ehat --embed-dim 48 --depths 2,2 --heads 4,4 --window 8 --scale 2 -o m.safetensors

Presets: hat-s-x4, hat-x2, hat-x4, hat-l-x4, ehat-l-x4, ehat-x2, ehat-small-x4, ehat-tiny-x2,
hat-tiny-x2. Options given next to a preset override it.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Dict

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ehat_ref.model import EhatConfig, EhatNet, reflect_pad, save  # noqa: E402

# Reference configurations (EHAT-SPEC.md §8) and small ones for tests.
_HAT = dict(embed_dim=180, depths=[6] * 6, num_heads=[6] * 6, window_size=16, compress_ratio=3,
            squeeze_factor=30, conv_scale=0.01, mlp_ratio=2.0)
_HAT_L = dict(_HAT, depths=[6] * 12, num_heads=[6] * 12)
_TINY = dict(embed_dim=24, depths=[2, 2], num_heads=[3, 3], window_size=8, compress_ratio=3,
             squeeze_factor=6, conv_scale=0.01, mlp_ratio=2.0)
PRESETS: Dict[str, dict] = {
    "hat-s-x4": dict(arch="hat", upscale=4, embed_dim=144, depths=[6] * 6, num_heads=[6] * 6,
                     window_size=16, compress_ratio=24, squeeze_factor=24, conv_scale=0.01, mlp_ratio=2.0),
    "hat-x2": dict(_HAT, arch="hat", upscale=2),
    "hat-x4": dict(_HAT, arch="hat", upscale=4),
    "hat-l-x4": dict(_HAT_L, arch="hat", upscale=4),
    "ehat-l-x4": dict(_HAT_L, arch="ehat", upscale=4),
    "ehat-x2": dict(_HAT_L, arch="ehat", upscale=2),
    "ehat-small-x4": dict(embed_dim=36, depths=[3, 2, 2], num_heads=[4, 4, 4], window_size=8,
                          compress_ratio=3, squeeze_factor=6, conv_scale=0.01, mlp_ratio=2.0,
                          arch="ehat", upscale=4),
    "ehat-tiny-x2": dict(_TINY, arch="ehat", upscale=2),
    "hat-tiny-x2": dict(_TINY, arch="hat", upscale=2),
}


def randomise(model: EhatNet, seed: int) -> None:
    """Redraw weights, perturb every LayerNorm, bias, bias table and branch weight.

    Linear/conv weights N(0, 1/fan_in); LayerNorm weight 1 + N(0,0.1), LayerNorm and other
    biases N(0,0.05), relative-position tables N(0,0.5) (the golden data's values); weight_0
    N(0,0.1), weight_1 1 + N(0,0.1); DANet gammas N(0,0.1) (non-zero so the block is exercised).
    """
    g = torch.Generator().manual_seed(seed + 1)

    def normal(p, std, mean=0.0):
        with torch.no_grad():
            p.copy_(mean + std * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))

    lns = {n for n, m in model.named_modules() if isinstance(m, nn.LayerNorm)}
    for name, p in model.named_parameters():
        owner, _, leaf = name.rpartition(".")
        if owner in lns and leaf == "weight":
            normal(p, 0.1, 1.0)
        elif leaf == "weight" and p.dim() >= 2:
            normal(p, p[0].numel() ** -0.5)
        elif leaf == "bias":
            normal(p, 0.05)
        elif leaf == "relative_position_bias_table":
            normal(p, 0.5)
        elif name.endswith("weight_0"):
            normal(p, 0.1)
        elif name.endswith("weight_1"):
            normal(p, 0.1, 1.0)
        elif leaf == "gamma":
            normal(p, 0.1)
        elif name == "absolute_pos_embed":
            normal(p, 0.02)


def make(cfg: EhatConfig, seed: int = 0) -> EhatNet:
    """A model with PyTorch's default initialisation (seeded), then :func:`randomise`."""
    torch.manual_seed(seed)
    model = EhatNet(cfg)
    randomise(model, seed)
    return model.eval()


def output_std(model: EhatNet, size: int = 32, seed: int = 0) -> float:
    """Std of the model's output on a random ``size×size`` input in [0,1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, size, size, generator=g)
    ws = model.cfg.window_size
    hp = -(-size // ws) * ws
    with torch.no_grad():
        return float(model(reflect_pad(x, hp, hp)).std())


def _ints(s: str):
    return [int(v) for v in s.replace("[", "").replace("]", "").split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--preset", choices=sorted(PRESETS), help="named configuration")
    p.add_argument("-o", "--output", required=True, help="output .safetensors path")
    p.add_argument("--arch", choices=("hat", "ehat"))
    p.add_argument("--embed-dim", type=int)
    p.add_argument("--depths", type=_ints, help="comma list, e.g. 6,6,6,6")
    p.add_argument("--heads", type=_ints, help="comma list, or one value for every group")
    p.add_argument("--window", type=int, help="window size")
    p.add_argument("--scale", type=int, choices=(2, 3, 4))
    p.add_argument("--compress-ratio", type=int)
    p.add_argument("--squeeze-factor", type=int)
    p.add_argument("--conv-scale", type=float)
    p.add_argument("--mlp-ratio", type=float)
    p.add_argument("--danet", action="store_true", help="add the DANet block (spec §6)")
    p.add_argument("--dtype", default="F32", choices=("F32", "F16", "BF16"))
    p.add_argument("--name", help="stored as metadata 'name'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check", action="store_true", help="print the output std on a 32×32 input")
    return p


def config_from_args(a) -> EhatConfig:
    kw = dict(PRESETS[a.preset]) if a.preset else dict(_TINY, arch="hat", upscale=2)
    over = dict(arch=a.arch, embed_dim=a.embed_dim, depths=a.depths, window_size=a.window,
                upscale=a.scale, compress_ratio=a.compress_ratio, squeeze_factor=a.squeeze_factor,
                conv_scale=a.conv_scale, mlp_ratio=a.mlp_ratio)
    kw.update({k: v for k, v in over.items() if v is not None})
    if a.heads is not None:
        kw["num_heads"] = a.heads
    if len(kw["num_heads"]) != len(kw["depths"]):
        if len(kw["num_heads"]) == 1 or len(set(kw["num_heads"])) == 1:
            kw["num_heads"] = [kw["num_heads"][0]] * len(kw["depths"])
    if a.danet:
        kw["danet"] = True
    return EhatConfig(**kw)


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    cfg = config_from_args(a)
    try:
        cfg.validate()
    except ValueError as e:
        print(f"make_model: {e}", file=sys.stderr)
        return 2
    model = make(cfg, a.seed)
    extra = {"name": a.name or (a.preset or "custom"), "weights": f"random (seed {a.seed})"}
    save(model, a.output, dtype=a.dtype, extra_metadata=extra)
    nparams = sum(p.numel() for p in model.parameters())
    msg = f"wrote {a.output}: {cfg.arch} x{cfg.upscale}, C={cfg.embed_dim}, depths={cfg.depths}, {nparams} parameters"
    if a.check:
        msg += f", output std {output_std(model):.3f}"
    print(msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
