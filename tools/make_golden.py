#!/usr/bin/env -S /usr/bin/python3
"""Golden cases the project makes itself, for what the original code lacks: DANet, and inputs
smaller than a model's absolute position embedding (padded up to it; the original runs only
inputs that pad to its size).

Same layout as ../shared/golden (DESIGN.md §4): model.safetensors (random weights),
lr.safetensors (tensor `image` [1,3,H,W], H and W not multiples of the window size),
sr.safetensors (the project's PyTorch reference, float64, whole pipeline, no clamping), info.json.
The reference reproduces ../shared/golden to 1e-7 (tests/python/test_reference.py), which is what
makes its output a valid reference here.

    tools/make_golden.py tests/golden
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ehat_ref import safetensors_io  # noqa: E402
from ehat_ref.model import EhatConfig, save, upscale  # noqa: E402
from make_model import make  # noqa: E402

CASES = {
    # name: (config, seed, lr (h, w))
    "ehat-danet-x2": (dict(arch="ehat", upscale=2, embed_dim=32, depths=[2, 1], num_heads=[4, 4],
                           window_size=8, compress_ratio=4, squeeze_factor=8, conv_scale=0.1,
                           mlp_ratio=2.0, danet=True), 71, (19, 22)),
    "hat-danet-x3": (dict(arch="hat", upscale=3, embed_dim=16, depths=[1], num_heads=[2],
                          window_size=4, compress_ratio=2, squeeze_factor=4, conv_scale=0.1,
                          mlp_ratio=2.0, danet=True), 72, (11, 14)),
    # 19×22 is padded to the embedding's 32×32, past the window grid's 24×24
    "ehat-ape-x2": (dict(arch="ehat", upscale=2, embed_dim=24, depths=[2], num_heads=[3],
                         window_size=8, compress_ratio=3, squeeze_factor=8, conv_scale=0.1,
                         mlp_ratio=2.0, ape=True, img_size=32), 73, (19, 22)),
}


def main(out_dir: str) -> int:
    for name, (cfg_kw, seed, (h, w)) in CASES.items():
        d = os.path.join(out_dir, name)
        os.makedirs(d, exist_ok=True)
        model = make(EhatConfig(**cfg_kw), seed)
        with torch.no_grad():
            # large enough that a wrong PAM/CAM or embedding cannot hide under 1e-4
            if model.cfg.danet:
                model.danet.pam.gamma.fill_(0.7)
                model.danet.cam.gamma.fill_(-0.4)
            if model.cfg.ape:
                g = torch.Generator().manual_seed(seed)
                model.absolute_pos_embed.copy_(torch.randn(model.absolute_pos_embed.shape,
                                                           generator=g) * 0.5)
        save(model, os.path.join(d, "model.safetensors"),
             extra_metadata={"name": name, "weights": f"random (seed {seed})"})
        g = torch.Generator().manual_seed(seed)
        lr = torch.rand(1, 3, h, w, generator=g, dtype=torch.float64).float()
        with torch.no_grad():
            sr = upscale(model, lr.double(), dtype=torch.float64)
        safetensors_io.save_file(os.path.join(d, "lr.safetensors"), {"image": lr.numpy()})
        safetensors_io.save_file(os.path.join(d, "sr.safetensors"),
                                 {"image": sr.float().numpy()})
        info = dict(config=cfg_kw, seed=seed, lr_shape=list(lr.shape), sr_shape=list(sr.shape),
                    params=int(sum(p.numel() for p in model.state_dict().values())),
                    sr_min=float(sr.min()), sr_max=float(sr.max()), sr_std=float(sr.std()),
                    generator="tools/make_golden.py (project PyTorch reference, float64)")
        with open(os.path.join(d, "info.json"), "w") as f:
            json.dump(info, f, indent=1)
        print(f"{name}: sr {tuple(sr.shape)} std {info['sr_std']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "tests/golden"))
