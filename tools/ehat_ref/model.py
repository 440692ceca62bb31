"""PyTorch reference implementation of HAT and EHAT, written from ``EHAT-SPEC.md``.

One code path serves both architectures: HAT is EHAT with every branch weight ``w0 = 0`` and
``w1 = 1`` (spec §5); for HAT the zero terms are skipped and the unit factors are not applied.

Module names are chosen so that ``state_dict()`` keys are exactly the tensor names of the model
files (spec §7, DESIGN.md §2); index buffers and the shift mask are computed, never stored.

Entry points:
    from_config(metadata)   build an (untrained) model from the model-file ``__metadata__``
    load(path)              read a model file (F32/F16/BF16/F64), check every shape, load weights
    upscale(model, lr)      the whole test pipeline of spec §1 (pad, normalise, network, crop)

The network itself (``EhatNet.forward``) takes an image in [0,1] whose sides are multiples of the
window size, normalises, runs, denormalises. It has no data-dependent Python control flow (the
shift mask and the window geometry are derived from the input shape with tensor ops), so it can be
traced or exported to ONNX.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, asdict
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import safetensors_io

__all__ = [
    "EhatConfig",
    "EhatNet",
    "from_config",
    "parse_metadata",
    "config_to_metadata",
    "load",
    "save",
    "upscale",
    "reflect_pad",
    "FORMAT",
]

FORMAT = "ehat-sr/1"
RGB_MEAN = (0.4488, 0.4371, 0.4040)

# Lengths of the EHAT branch-weight vectors in the released checkpoints (HAT-L-sized EHAT).
BSA_LEN0 = 169
BSA_LEN1 = 157
BSA_PREFIX = "__branchattentionmodule__"


# --------------------------------------------------------------------------------------------
# Configuration (model-file metadata, DESIGN.md §2)
# --------------------------------------------------------------------------------------------


@dataclass
class EhatConfig:
    """Network configuration; field names are the metadata keys of DESIGN.md §2."""

    arch: str = "hat"  # "hat" or "ehat"
    upscale: int = 4
    embed_dim: int = 180
    depths: List[int] = field(default_factory=lambda: [6] * 6)
    num_heads: List[int] = field(default_factory=lambda: [6] * 6)
    window_size: int = 16
    compress_ratio: int = 3
    squeeze_factor: int = 30
    conv_scale: float = 0.01
    overlap_ratio: float = 0.5
    mlp_ratio: float = 2.0
    img_range: float = 1.0
    rgb_mean: List[float] = field(default_factory=lambda: list(RGB_MEAN))
    upsampler: str = "pixelshuffle"
    resi_connection: str = "1conv"
    # optional extensions
    danet: bool = False  # DANet block after `norm` (spec §6)
    ape: bool = False  # absolute position embedding (needs a fixed input size)
    img_size: int = 64  # LR size the absolute position embedding was made for (ape only)

    # -- derived quantities -------------------------------------------------------------
    @property
    def is_ehat(self) -> bool:
        return self.arch == "ehat"

    @property
    def shift_size(self) -> int:
        return self.window_size // 2

    @property
    def overlap_win_size(self) -> int:
        return self.window_size + int(self.window_size * self.overlap_ratio)

    def bsa_counts(self) -> Tuple[int, int]:
        """Branch weights one forward pass consumes: (len of weight_0, len of weight_1) (spec §5)."""
        n0 = 1 + sum(2 + 2 * d for d in self.depths)
        n1 = (1 if self.ape else 0) + sum(2 * d + 1 for d in self.depths) + 1
        return n0, n1

    def validate(self) -> None:
        if self.arch not in ("hat", "ehat"):
            raise ValueError(f"arch must be 'hat' or 'ehat', not {self.arch!r}")
        if self.upscale not in (2, 3, 4):
            raise ValueError(f"upscale must be 2, 3 or 4, not {self.upscale}")
        if self.upsampler != "pixelshuffle":
            raise ValueError(f"upsampler {self.upsampler!r} is not supported (only pixelshuffle)")
        if self.resi_connection != "1conv":
            raise ValueError(f"resi_connection {self.resi_connection!r} is not supported (only 1conv)")
        if len(self.depths) != len(self.num_heads) or not self.depths:
            raise ValueError("depths and num_heads must be non-empty lists of the same length")
        for h in self.num_heads:
            if h <= 0 or self.embed_dim % h:
                raise ValueError(f"embed_dim {self.embed_dim} is not divisible by {h} heads")
        if self.window_size < 2 or self.window_size % 2:
            raise ValueError(f"window_size must be even and >= 2, not {self.window_size}")
        if (self.overlap_win_size - self.window_size) % 2:
            raise ValueError("window_size * overlap_ratio must be even")
        for name in ("compress_ratio", "squeeze_factor"):
            v = getattr(self, name)
            if v <= 0 or self.embed_dim // v < 1:
                raise ValueError(f"{name} {v} leaves no channels for embed_dim {self.embed_dim}")
        if self.danet and self.embed_dim < 8:
            raise ValueError("danet needs embed_dim >= 8")
        if self.ape and (self.img_size < 1 or self.img_size % self.window_size):
            # inputs are padded to the window grid before the embedding is added
            raise ValueError(f"img_size {self.img_size} of the position embedding is not a multiple "
                             f"of window_size {self.window_size}")
        if len(self.rgb_mean) != 3:
            raise ValueError("rgb_mean must have 3 values")


_REQUIRED_KEYS = (
    "format", "arch", "upscale", "embed_dim", "depths", "num_heads", "window_size",
    "compress_ratio", "squeeze_factor", "conv_scale", "overlap_ratio", "mlp_ratio",
    "img_range", "rgb_mean", "upsampler", "resi_connection",
)
_INT_KEYS = ("upscale", "embed_dim", "window_size", "compress_ratio", "squeeze_factor", "img_size")
_FLOAT_KEYS = ("conv_scale", "overlap_ratio", "mlp_ratio", "img_range")
_LIST_INT_KEYS = ("depths", "num_heads")
_WORD_KEYS = ("arch", "upsampler", "resi_connection")
_BOOL_KEYS = ("danet", "ape")


def _parse_bool(s: str) -> bool:
    v = s.strip().lower()
    if v in ("true", "1", "yes"):
        return True
    if v in ("false", "0", "no", ""):
        return False
    raise ValueError(f"not a boolean: {s!r}")


def parse_metadata(meta: Mapping[str, str]) -> EhatConfig:
    """Model-file ``__metadata__`` (str -> str) -> :class:`EhatConfig`.

    Numbers and lists are JSON, words plain text (DESIGN.md §2). A missing required key raises
    ``KeyError`` naming it; unknown keys are ignored.
    """
    for key in _REQUIRED_KEYS:
        if key not in meta:
            raise KeyError(f"model metadata lacks the required key {key!r}")
    if meta["format"] != FORMAT:
        raise ValueError(f"model format {meta['format']!r} is not {FORMAT!r}")
    kw = {}
    try:
        for key in _INT_KEYS:
            if key in meta:
                v = json.loads(meta[key])
                if isinstance(v, float) and v.is_integer():
                    v = int(v)
                if not isinstance(v, int):
                    raise ValueError
                kw[key] = v
        for key in _FLOAT_KEYS:
            if key in meta:
                kw[key] = float(json.loads(meta[key]))
        for key in _LIST_INT_KEYS:
            if key in meta:
                v = json.loads(meta[key])
                if not isinstance(v, list) or not all(isinstance(i, int) for i in v):
                    raise ValueError
                kw[key] = v
        v = json.loads(meta["rgb_mean"])
        kw["rgb_mean"] = [float(i) for i in v]
        for key in _WORD_KEYS:
            if key in meta:
                kw[key] = meta[key].strip()
        for key in _BOOL_KEYS:
            if key in meta:
                kw[key] = _parse_bool(meta[key])
    except (ValueError, TypeError) as e:
        raise ValueError(f"model metadata key {key!r} has a bad value {meta[key]!r}") from e
    cfg = EhatConfig(**kw)
    cfg.validate()
    return cfg


def config_to_metadata(cfg: EhatConfig, extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """:class:`EhatConfig` -> model-file ``__metadata__`` (JSON numbers/lists, plain words)."""
    meta = {"format": FORMAT, "arch": cfg.arch}
    for key in _INT_KEYS + _FLOAT_KEYS + _LIST_INT_KEYS:
        if key == "img_size" and not cfg.ape:
            continue
        meta[key] = json.dumps(getattr(cfg, key))
    meta["rgb_mean"] = json.dumps([float(v) for v in cfg.rgb_mean])
    meta["upsampler"] = cfg.upsampler
    meta["resi_connection"] = cfg.resi_connection
    if cfg.danet:
        meta["danet"] = "true"
    if cfg.ape:
        meta["ape"] = "true"
    if extra:
        meta.update({str(k): str(v) for k, v in extra.items()})
    return meta


# --------------------------------------------------------------------------------------------
# Branch weights (BSA, spec §5)
# --------------------------------------------------------------------------------------------


class BranchWeights(nn.Module):
    """EHAT's shared branch-weight module: ``weight_0`` (trained from 0), ``weight_1`` (from 1).

    Each use takes the next unused element of its vector; both counters restart at every forward
    pass (:meth:`reset`). For HAT (``enabled=False``) there are no parameters: :meth:`w0` returns
    ``None`` ("zero: skip the term") and :meth:`w1` returns ``None`` ("one: no factor").
    """

    def __init__(self, enabled: bool, n0: int = BSA_LEN0, n1: int = BSA_LEN1):
        super().__init__()
        self.enabled = enabled
        self.n0 = self.n1 = 0  # vector lengths as Python ints (no tensor reads when traced)
        if enabled:
            self.resize(n0, n1)
        self.i0 = 0
        self.i1 = 0

    def resize(self, n0: int, n1: int) -> None:
        """Replace the vectors by fresh ones of lengths ``n0``, ``n1`` (zeros, ones)."""
        self.weight_0 = nn.Parameter(torch.zeros(n0))
        self.weight_1 = nn.Parameter(torch.ones(n1))
        self.n0, self.n1 = n0, n1

    def reset(self) -> None:
        self.i0 = 0
        self.i1 = 0

    def w0(self) -> Optional[torch.Tensor]:
        if not self.enabled:
            return None
        if self.i0 >= self.n0:
            raise RuntimeError(f"{BSA_PREFIX}.weight_0 has only {self.n0} values")
        w = self.weight_0[self.i0]
        self.i0 += 1
        return w

    def w1(self) -> Optional[torch.Tensor]:
        if not self.enabled:
            return None
        if self.i1 >= self.n1:
            raise RuntimeError(f"{BSA_PREFIX}.weight_1 has only {self.n1} values")
        w = self.weight_1[self.i1]
        self.i1 += 1
        return w


def _scale1(w: Optional[torch.Tensor], t: torch.Tensor) -> torch.Tensor:
    """``w1 · t`` where ``None`` means 1."""
    return t if w is None else w * t


def _acc0(acc: Optional[torch.Tensor], w: Optional[torch.Tensor], t: torch.Tensor) -> Optional[torch.Tensor]:
    """``acc + w0 · t`` where ``None`` (for ``acc`` or ``w``) means 0."""
    if w is None:
        return acc
    return w * t if acc is None else acc + w * t


class _Ctx:
    """Per-forward state handed down the network: map size, shift mask, branch-weight counters."""

    def __init__(self, h: int, w: int, mask: torch.Tensor, bsa: BranchWeights):
        self.h = h
        self.w = w
        self.mask = mask
        self.bsa = bsa


# --------------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------------


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """``[B,H,W,C]`` -> ``[B·nW, ws·ws, C]``, windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """``[B·nW, ws·ws, C]`` -> ``[B,H,W,C]``."""
    c = windows.shape[-1]
    x = windows.view(-1, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def relative_position_index_sa(ws: int) -> torch.Tensor:
    """``[ws², ws²]``: ``(yi−yj+ws−1)·(2ws−1) + (xi−xj+ws−1)`` (spec §4)."""
    ys, xs = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
    y, x = ys.flatten(), xs.flatten()
    dy = y[:, None] - y[None, :] + ws - 1
    dx = x[:, None] - x[None, :] + ws - 1
    return dy * (2 * ws - 1) + dx


def relative_position_index_oca(ws: int, wse: int) -> torch.Tensor:
    """``[ws², wse²]``: OCAB bias index, taken ``mod L`` as PyTorch's negative indexing does."""
    yq, xq = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
    yk, xk = torch.meshgrid(torch.arange(wse), torch.arange(wse), indexing="ij")
    yq, xq, yk, xk = yq.flatten(), xq.flatten(), yk.flatten(), xk.flatten()
    side = ws + wse - 1
    idx = (yk[None, :] - yq[:, None] + ws - wse + 1) * side + (xk[None, :] - xq[:, None] + ws - wse + 1)
    return torch.remainder(idx, side * side)


def shift_attention_mask(h: int, w: int, ws: int, s: int, dtype, device) -> torch.Tensor:
    """Shift mask ``[nW, ws², ws²]`` for a padded ``h×w`` map: 0 inside a region, −100 across.

    Rows ``[0,h−ws)``, ``[h−ws,h−s)``, ``[h−s,h)`` get labels 0,1,2 (columns likewise); the labels
    are positions of the shifted map and are windowed as the shifted features are (spec §4).
    Built with tensor ops from the size only (traceable).
    """
    ys = torch.arange(h, device=device)
    xs = torch.arange(w, device=device)
    ly = (ys >= h - ws).to(torch.int64) + (ys >= h - s).to(torch.int64)
    lx = (xs >= w - ws).to(torch.int64) + (xs >= w - s).to(torch.int64)
    region = (3 * ly[:, None] + lx[None, :]).view(1, h, w, 1)
    rw = window_partition(region, ws).squeeze(-1)  # [nW, ws²]
    diff = rw[:, :, None] != rw[:, None, :]
    return diff.to(dtype) * -100.0


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """``[B,C,H,W]`` -> ``[B,H·W,C]``."""
    return x.flatten(2).transpose(1, 2)


def _map(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``[B,H·W,C]`` -> ``[B,C,H,W]``."""
    return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf) form
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class ChannelAttention(nn.Module):
    """``v · sigmoid(conv1×1(ReLU(conv1×1(mean_xy(v)))))`` (names ``attention.1``, ``attention.3``)."""

    def __init__(self, c: int, squeeze: int):
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(c, c // squeeze, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c // squeeze, c, 1),
            nn.Sigmoid(),
        )

    def forward(self, x):
        return x * self.attention(x)


class CAB(nn.Module):
    """Channel-attention block: ``cab.{0: conv, 1: GELU, 2: conv, 3: ChannelAttention}``; EHAT adds ``w0·input``."""

    def __init__(self, c: int, compress: int, squeeze: int):
        super().__init__()
        self.cab = nn.Sequential(
            nn.Conv2d(c, c // compress, 3, 1, 1),
            nn.GELU(),
            nn.Conv2d(c // compress, c, 3, 1, 1),
            ChannelAttention(c, squeeze),
        )

    def forward(self, x, w0: Optional[torch.Tensor]):
        v = self.cab(x)
        return v if w0 is None else v + w0 * x


class WindowAttention(nn.Module):
    """Window self-attention with relative-position bias (``attn``)."""

    def __init__(self, dim: int, ws: int, heads: int):
        super().__init__()
        self.dim = dim
        self.ws = ws
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, heads))
        self.register_buffer("rpi", relative_position_index_sa(ws), persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """``x``: ``[B·nW, n, C]``; ``mask``: ``[nW, n, n]`` or None."""
        bn, n, c = x.shape
        d = c // self.heads
        qkv = self.qkv(x).reshape(bn, n, 3, self.heads, d).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)  # [B·nW, nH, n, n]
        bias = self.relative_position_bias_table[self.rpi.reshape(-1)].view(n, n, -1).permute(2, 0, 1)
        attn.add_(bias.unsqueeze(0))  # in place: the scores are the largest tensors here
        if mask is not None:
            # in place on `attn` itself, not through a view of it: torch.onnx.export (1.13) drops
            # an in-place op on a view, and the exported graph would lose the mask
            nw = mask.shape[0]
            attn.add_(mask.expand(bn // nw, nw, n, n).reshape(bn, 1, n, n))  # a view when B = 1
        attn = torch.softmax(attn, dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(bn, n, c)
        return self.proj(out)


class HAB(nn.Module):
    """Hybrid attention block (``blocks.i``): window attention + CAB in parallel, then MLP."""

    def __init__(self, cfg: EhatConfig, heads: int, shift: int):
        super().__init__()
        c = cfg.embed_dim
        self.ws = cfg.window_size
        self.shift = shift
        self.conv_scale = cfg.conv_scale
        self.norm1 = nn.LayerNorm(c)
        self.attn = WindowAttention(c, self.ws, heads)
        self.conv_block = CAB(c, cfg.compress_ratio, cfg.squeeze_factor)
        self.norm2 = nn.LayerNorm(c)
        self.mlp = Mlp(c, int(c * cfg.mlp_ratio))

    def forward(self, t: torch.Tensor, ctx: _Ctx) -> torch.Tensor:
        b, n, c = t.shape
        h, w, ws, s = ctx.h, ctx.w, self.ws, self.shift
        nrm = self.norm1(t)
        x = nrm.view(b, h, w, c)
        conv_x = _tokens(self.conv_block(x.permute(0, 3, 1, 2), ctx.bsa.w0()))
        if s > 0:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        a = self.attn(window_partition(x, ws), ctx.mask if s > 0 else None)
        x = window_reverse(a, ws, h, w)
        if s > 0:
            x = torch.roll(x, shifts=(s, s), dims=(1, 2))
        a = x.reshape(b, n, c)
        t = _scale1(ctx.bsa.w1(), t) + a + conv_x * self.conv_scale
        t = _scale1(ctx.bsa.w1(), t) + self.mlp(self.norm2(t))
        return t


class OCAB(nn.Module):
    """Overlapping cross-attention block (``overlap_attn``)."""

    def __init__(self, cfg: EhatConfig, heads: int):
        super().__init__()
        c = cfg.embed_dim
        self.dim = c
        self.heads = heads
        self.ws = cfg.window_size
        self.wse = cfg.overlap_win_size
        self.pad = (self.wse - self.ws) // 2
        self.scale = (c // heads) ** -0.5
        self.norm1 = nn.LayerNorm(c)
        self.qkv = nn.Linear(c, 3 * c)
        side = self.ws + self.wse - 1
        self.relative_position_bias_table = nn.Parameter(torch.zeros(side * side, heads))
        self.register_buffer("rpi", relative_position_index_oca(self.ws, self.wse), persistent=False)
        self.proj = nn.Linear(c, c)
        self.norm2 = nn.LayerNorm(c)
        self.mlp = Mlp(c, int(c * cfg.mlp_ratio))

    def forward(self, t: torch.Tensor, ctx: _Ctx) -> torch.Tensor:
        b, n, c = t.shape
        h, w, ws, wse, nh = ctx.h, ctx.w, self.ws, self.wse, self.heads
        d = c // nh
        qkv = self.qkv(self.norm1(t)).view(b, h, w, 3 * c)
        q = qkv[..., :c]
        # keys/values: wse×wse squares around each window, zero outside the map (after the linear
        # layer, so no bias there): exactly nn.Unfold(wse, stride=ws, padding=p) on k‖v.
        kv = qkv[..., c:].permute(0, 3, 1, 2)  # [B, 2C, H, W]
        kv = F.unfold(kv, kernel_size=(wse, wse), stride=ws, padding=self.pad)  # [B, 2C·wse², nW]
        kv = kv.view(b, 2, c, wse * wse, -1).permute(1, 0, 4, 3, 2).reshape(2, -1, wse * wse, c)
        k, v = kv[0], kv[1]  # [B·nW, wse², C]
        qw = window_partition(q, ws)  # [B·nW, ws², C]
        bn, nq, _ = qw.shape
        nk = wse * wse
        qh = qw.reshape(bn, nq, nh, d).transpose(1, 2)
        kh = k.reshape(bn, nk, nh, d).transpose(1, 2)
        vh = v.reshape(bn, nk, nh, d).transpose(1, 2)
        attn = (qh * self.scale) @ kh.transpose(-2, -1)  # [B·nW, nH, ws², wse²]
        bias = self.relative_position_bias_table[self.rpi.reshape(-1)].view(nq, nk, -1).permute(2, 0, 1)
        attn = torch.softmax(attn.add_(bias.unsqueeze(0)), dim=-1)
        o = (attn @ vh).transpose(1, 2).reshape(bn, nq, c)
        o = window_reverse(o, ws, h, w).reshape(b, n, c)
        t = self.proj(o) + t
        t = t + self.mlp(self.norm2(t))
        return t


class AttenBlocks(nn.Module):
    """``layers.l.residual_group``: D HABs (alternately shifted) then OCAB."""

    def __init__(self, cfg: EhatConfig, depth: int, heads: int):
        super().__init__()
        s = cfg.shift_size
        self.blocks = nn.ModuleList([HAB(cfg, heads, 0 if i % 2 == 0 else s) for i in range(depth)])
        self.overlap_attn = OCAB(cfg, heads)

    def forward(self, t: torch.Tensor, ctx: _Ctx) -> torch.Tensor:
        z = _acc0(None, ctx.bsa.w0(), t)
        for blk in self.blocks:
            t = blk(t, ctx)
            z = _acc0(z, ctx.bsa.w0(), t)
        return self.overlap_attn(t if z is None else t + z, ctx)


class RHAG(nn.Module):
    """Residual hybrid attention group (``layers.l``)."""

    def __init__(self, cfg: EhatConfig, depth: int, heads: int):
        super().__init__()
        c = cfg.embed_dim
        self.residual_group = AttenBlocks(cfg, depth, heads)
        self.conv = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, t: torch.Tensor, ctx: _Ctx) -> torch.Tensor:
        t_in = t
        t = self.residual_group(t, ctx)  # all AttenBlocks' uses come before the RHAG's w1
        t = _tokens(self.conv(_map(t, ctx.h, ctx.w)))
        return t + _scale1(ctx.bsa.w1(), t_in)


class PatchEmbed(nn.Module):
    """Holds ``patch_embed.norm`` (patch_norm is on in every model)."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = nn.LayerNorm(c)

    def forward(self, x):
        return self.norm(_tokens(x))


# --------------------------------------------------------------------------------------------
# DANet (spec §6)
# --------------------------------------------------------------------------------------------


class PAM(nn.Module):
    """Position attention: ``S = softmax_j(Q_iᵀK_j)``, ``PAM_i = Σ_j S_ij V_j`` (no scaling).

    Queries are processed in chunks so that at most ``chunk × N`` scores exist at a time.
    """

    def __init__(self, c: int, chunk_elems: int = 1 << 24):
        super().__init__()
        self.query_conv = nn.Conv2d(c, c // 8, 1)
        self.key_conv = nn.Conv2d(c, c // 8, 1)
        self.value_conv = nn.Conv2d(c, c, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.chunk_elems = chunk_elems

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        b, c, h, w = f.shape
        n = h * w
        q = self.query_conv(f).flatten(2).transpose(1, 2)  # [B, N, C/8]
        k = self.key_conv(f).flatten(2)  # [B, C/8, N]
        v = self.value_conv(f).flatten(2)  # [B, C, N]
        chunk = max(1, self.chunk_elems // max(n, 1))
        outs = []
        for i in range(0, n, chunk):  # shape-dependent only (unrolled when traced)
            s = torch.softmax(q[:, i : i + chunk] @ k, dim=-1)  # [B, chunk, N]
            outs.append(v @ s.transpose(1, 2))  # [B, C, chunk]
        return torch.cat(outs, dim=2).view(b, c, h, w)


class CAM(nn.Module):
    """Channel attention: ``E = F·Fᵀ``, ``A = softmax_row(max_row(E) − E)``, ``CAM = A·F``."""

    def __init__(self):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        b, c, h, w = f.shape
        fm = f.flatten(2)  # [B, C, N]
        e = fm @ fm.transpose(1, 2)  # [B, C, C]
        e = torch.amax(e, dim=-1, keepdim=True) - e
        return (torch.softmax(e, dim=-1) @ fm).view(b, c, h, w)


class DANet(nn.Module):
    """``danet(f) = f + γp·PAM(f) + γc·CAM(f)``."""

    def __init__(self, c: int):
        super().__init__()
        self.pam = PAM(c)
        self.cam = CAM()

    def forward(self, f):
        return f + self.pam.gamma * self.pam(f) + self.cam.gamma * self.cam(f)


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------


class EhatNet(nn.Module):
    """HAT / EHAT super-resolution network (spec §2–§6).

    ``forward(x)``: ``x`` ``[B,3,H,W]`` RGB in [0,1] with ``H``, ``W`` multiples of ``window_size``
    -> ``[B,3,rH,rW]`` (normalise, network, denormalise; no clamp).
    """

    def __init__(self, cfg: EhatConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        c = cfg.embed_dim
        n0, n1 = cfg.bsa_counts()
        self.bsa_needed = (n0, n1)
        self.register_buffer("rgb_mean", torch.tensor(cfg.rgb_mean).view(1, 3, 1, 1), persistent=False)

        self.conv_first = nn.Conv2d(3, c, 3, 1, 1)
        self.patch_embed = PatchEmbed(c)
        if cfg.ape:
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, cfg.img_size * cfg.img_size, c))
        self.layers = nn.ModuleList([RHAG(cfg, d, h) for d, h in zip(cfg.depths, cfg.num_heads)])
        self.norm = nn.LayerNorm(c)
        if cfg.danet:
            self.danet = DANet(c)
        self.conv_after_body = nn.Conv2d(c, c, 3, 1, 1)
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(c, 64, 3, 1, 1), nn.LeakyReLU(0.01, inplace=True))
        up: List[nn.Module] = []
        if cfg.upscale in (2, 4):
            for _ in range(int(math.log2(cfg.upscale))):
                up += [nn.Conv2d(64, 4 * 64, 3, 1, 1), nn.PixelShuffle(2)]
        else:
            up += [nn.Conv2d(64, 9 * 64, 3, 1, 1), nn.PixelShuffle(3)]
        self.upsample = nn.Sequential(*up)
        self.conv_last = nn.Conv2d(64, 3, 3, 1, 1)
        # registered last so that it is the last entry of state_dict(); stored once
        self.add_module(BSA_PREFIX, BranchWeights(cfg.is_ehat, max(BSA_LEN0, n0), max(BSA_LEN1, n1)))

    @property
    def bsa(self) -> BranchWeights:
        return getattr(self, BSA_PREFIX)

    def forward_features(self, x0: torch.Tensor, ctx: _Ctx) -> torch.Tensor:
        bsa = ctx.bsa
        t = self.patch_embed(x0)
        if self.cfg.ape:
            t = t + _scale1(bsa.w1(), self.absolute_pos_embed)
        y = _acc0(None, bsa.w0(), t)
        for layer in self.layers:
            t = layer(t, ctx)
            y = _acc0(y, bsa.w0(), t)
        t = self.norm(t if y is None else t + y)
        return _map(t, ctx.h, ctx.w)

    def forward_network(self, x: torch.Tensor) -> torch.Tensor:
        """The network of spec §2 on an already normalised input."""
        h, w = x.shape[-2], x.shape[-1]
        cfg = self.cfg
        mask = shift_attention_mask(h, w, cfg.window_size, cfg.shift_size, x.dtype, x.device)
        bsa = self.bsa
        bsa.reset()
        ctx = _Ctx(h, w, mask, bsa)
        x0 = self.conv_first(x)
        f = self.forward_features(x0, ctx)
        if cfg.danet:
            f = self.danet(f)
        b = self.conv_after_body(f) + _scale1(bsa.w1(), x0)
        u = self.conv_before_upsample(b)
        out = self.conv_last(self.upsample(u))
        if bsa.enabled:
            assert (bsa.i0, bsa.i1) == self.bsa_needed, "branch-weight count mismatch"
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.rgb_mean.to(x.dtype)
        r = self.cfg.img_range
        y = self.forward_network((x - mean) * r)
        return y / r + mean


# --------------------------------------------------------------------------------------------
# Construction, loading, saving
# --------------------------------------------------------------------------------------------


def from_config(meta: Union[Mapping[str, str], EhatConfig]) -> EhatNet:
    """Build a model (PyTorch default initialisation) from model-file metadata or a config."""
    cfg = meta if isinstance(meta, EhatConfig) else parse_metadata(meta)
    return EhatNet(cfg)


_IGNORED_SUFFIXES = ("relative_position_index_SA", "relative_position_index_OCA", "attn_mask",
                     "relative_position_index")


def load(path: str, dtype: torch.dtype = torch.float32, strict: bool = True) -> EhatNet:
    """Load a model file: parse metadata, check every tensor shape, load weights as ``dtype``.

    Index buffers and masks in the file are ignored. The EHAT branch-weight vectors may be longer
    than the configuration needs (the rest is ignored) but not shorter. With ``strict`` every
    parameter must be present and no unknown tensor may be.
    """
    tensors, meta = safetensors_io.load_file(path)
    meta = dict(meta)
    if "absolute_pos_embed" in tensors and not _parse_bool(meta.get("ape", "false")):
        meta["ape"] = "true"
        meta.setdefault("img_size", str(int(round(math.sqrt(tensors["absolute_pos_embed"].shape[1])))))
    if any(k.startswith("danet.") for k in tensors) and "danet" not in meta:
        meta["danet"] = "true"
    model = from_config(meta)
    bsa = model.bsa
    if bsa.enabled:
        have = []
        for name, need in zip(("weight_0", "weight_1"), model.bsa_needed):
            key = f"{BSA_PREFIX}.{name}"
            if key not in tensors:
                raise KeyError(f"model file lacks tensor {key!r}")
            if tensors[key].ndim != 1 or tensors[key].shape[0] < need:
                raise ValueError(f"tensor {key!r}: expected at least [{need}] (the configuration's "
                                 f"uses), found {list(tensors[key].shape)}")
            have.append(tensors[key].shape[0])
        bsa.resize(*have)
    own = model.state_dict()
    state = {}
    for name, arr in tensors.items():
        if name.split(".")[-1] in _IGNORED_SUFFIXES:
            continue
        if name not in own:
            if strict:
                raise KeyError(f"model file has an unexpected tensor {name!r}")
            continue
        if tuple(arr.shape) != tuple(own[name].shape):
            raise ValueError(f"tensor {name!r}: expected shape {list(own[name].shape)}, found {list(arr.shape)}")
        state[name] = torch.from_numpy(np.ascontiguousarray(arr)).to(torch.float64)
    missing = [k for k in own if k not in state]
    if missing and strict:
        raise KeyError(f"model file lacks tensor {missing[0]!r} ({len(missing)} missing)")
    model.load_state_dict(state, strict=False)
    model.to(dtype)
    model.eval()
    return model


def save(model: EhatNet, path: str, dtype: str = "F32", extra_metadata: Optional[Mapping[str, str]] = None) -> None:
    """Write ``model`` in the project's model format (DESIGN.md §2)."""
    meta = config_to_metadata(model.cfg, extra_metadata)
    safetensors_io.save_file(path, model.state_dict(), meta, dtype=dtype)


# --------------------------------------------------------------------------------------------
# Test pipeline (spec §1)
# --------------------------------------------------------------------------------------------


def _mirror_index(n: int, size: int, device=None) -> torch.Tensor:
    """Source index of each of ``size`` positions when ``n`` are extended by reflection.

    Positions ``< n`` map to themselves; beyond, PyTorch's 'reflect' (edge not repeated), extended
    periodically with period ``2(n−1)`` when the pad is ≥ n; a 1-pixel side replicates.
    """
    i = torch.arange(size, device=device)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    k = torch.remainder(i, period)
    return torch.where(k < n, k, period - k)


def reflect_pad(x: torch.Tensor, hp: int, wp: int) -> torch.Tensor:
    """Pad ``[..., h, w]`` at the bottom/right to ``hp×wp`` by (periodic) reflection."""
    h, w = x.shape[-2], x.shape[-1]
    if hp == h and wp == w:
        return x
    x = x.index_select(-2, _mirror_index(h, hp, x.device))
    return x.index_select(-1, _mirror_index(w, wp, x.device))


def dihedral(x: torch.Tensor, t: int, inverse: bool = False) -> torch.Tensor:
    """Transform ``t`` (0–7) of the self-ensemble on the last two axes: bit 0 flips columns, bit 1
    flips rows, bit 2 then transposes. ``inverse`` undoes it (transpose first, then the flips)."""
    flips = [d for bit, d in ((1, -1), (2, -2)) if t & bit]
    if not inverse and flips:
        x = torch.flip(x, flips)
    if t & 4:
        x = x.transpose(-1, -2)
    if inverse and flips:
        x = torch.flip(x, flips)
    return x


def upscale(model: EhatNet, lr, dtype: Optional[torch.dtype] = None, ensemble: int = 1) -> torch.Tensor:
    """Whole test pipeline: reflect-pad to a multiple of the window size (with an absolute
    position embedding: to its ``img_size × img_size``), normalise, run the network,
    denormalise, crop to ``r·h × r·w``. ``lr``: ``[3,h,w]`` or ``[B,3,h,w]`` (numpy or
    torch) in [0,1]. Runs in the model's dtype unless ``dtype`` is given (the model is converted).
    Returns a tensor of the input's rank; no clamping.

    ``ensemble`` > 1 is the self-ensemble of the SR papers ("+" results): the mean of the outputs
    for transforms 0 … ensemble−1 of :func:`dihedral` (2: and the mirror image; 4: all flips; 8:
    and the transposes), each mapped back. libehat's tiler computes the same per tile.
    """
    if ensemble not in (1, 2, 4, 8):
        raise ValueError(f"ensemble must be 1, 2, 4 or 8, not {ensemble}")
    if ensemble > 1:
        x = torch.as_tensor(np.asarray(lr) if not torch.is_tensor(lr) else lr)
        ys = [dihedral(upscale(model, dihedral(x, t), dtype), t, inverse=True) for t in range(ensemble)]
        return torch.stack(ys).mean(0)
    param = next(model.parameters())
    if dtype is not None and param.dtype != dtype:
        model.to(dtype)
    dtype = next(model.parameters()).dtype
    x = torch.as_tensor(np.asarray(lr) if not torch.is_tensor(lr) else lr).to(param.device, dtype)
    squeeze = x.dim() == 3
    if squeeze:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected [3,h,w] or [B,3,h,w], got {list(x.shape)}")
    h, w = x.shape[-2], x.shape[-1]
    ws, r = model.cfg.window_size, model.cfg.upscale
    hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
    if model.cfg.ape:
        # The embedding covers img_size × img_size tokens: HAT runs only inputs that pad to it;
        # here (and in libehat) a smaller input is padded up to it, and a larger one refused.
        s = model.cfg.img_size
        if hp > s or wp > s:
            raise ValueError(f"model has an absolute position embedding of {s}×{s} tokens, and a "
                             f"{w}×{h} input is larger: run it in tiles of at most {s}×{s}")
        hp = wp = s
    with torch.no_grad():
        y = model(reflect_pad(x, hp, wp))[..., : r * h, : r * w]
    return y[0] if squeeze else y
