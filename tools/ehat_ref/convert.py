"""Official HAT / EHAT ``.pth`` checkpoints -> the project's model format (DESIGN.md §2).

Reads the checkpoints of XPixelGroup/HAT (``hat/archs/hat_arch.py``: HAT-S, HAT, HAT-L,
Real-HAT-GAN, all ``network_g: type: HAT``) and of notiom/Ehat (``models/SKDADDYS_Ehat.py``), with
the state dict under ``params_ema`` or ``params`` (BasicSR), bare, or under ``ema`` / ``model`` /
``state_dict`` (our ``tools/train.py`` and other trainers), optionally with DataParallel's
``module.`` prefix. The configuration is detected from the tensor shapes; what the shapes cannot
tell (``conv_scale``, ``img_range``, ``rgb_mean``) comes from the official defaults or options.

Name mapping, official -> model file. Every tensor not listed keeps its name (the model format
uses the official names, DESIGN.md §2); the upstream code of both repositories was checked to
produce exactly these names, in this order, by ``tests/python/test_convert.py::test_upstream_code``.

- ``module.<name>`` -> ``<name>``: DataParallel prefix stripped.
- ``__branchattentionmodule__.weight_0`` / ``.weight_1`` -> same: EHAT's shared branch weights,
  stored once.
- ``layers.l.``, ``layers.l.residual_group.``, ``….blocks.i.``, ``….blocks.i.conv_block.``,
  ``….overlap_attn.`` + ``__branchattentionmodule__.weight_k`` -> dropped: aliases of that one
  module (a shared module's parameters appear under every parent); compared with it.
- ``relative_position_index_SA`` [ws², ws²] -> dropped after checking it against EHAT-SPEC.md §4.
- ``relative_position_index_OCA`` [ws², wse²] -> dropped after the same check (its negative
  entries taken mod L, as PyTorch's indexing does).
- ``layers.l.residual_group.blocks.i.attn.relative_position_index`` (SwinIR-style per-block
  buffer) -> dropped after checking like ``_SA``.
- ``layers.l.residual_group.blocks.i.attn_mask``, ``attn_mask`` -> dropped: the shift mask of the
  training patch size, recomputed for every input.

Detected from shapes: ``embed_dim`` (``conv_first`` out channels), ``depths`` (count of
``layers.l.residual_group.blocks.i``), ``num_heads`` (columns of each
``relative_position_bias_table``), ``window_size`` (rows ``(2ws−1)²`` of the block tables, and the
``_SA`` buffer), ``overlap_ratio`` (rows ``(ws+wse−1)²`` of the OCAB tables, ``wse = ws +
int(ws·ratio)``), ``mlp_ratio`` (``fc1`` rows / ``embed_dim``), ``compress_ratio`` and
``squeeze_factor`` (``cab.0`` and ``cab.3.attention.1`` out channels), ``upscale`` and
``upsampler`` (``upsample.{0,2,…}``: ``4·64`` out channels per ×2 stage, ``9·64`` for ×3),
``resi_connection`` (``conv_after_body`` a single 3×3 conv), ``arch`` (``ehat`` when the branch
weights are there), ``danet`` (``danet.*``, spec §6), ``ape`` and ``img_size``
(``absolute_pos_embed [1, img_size², C]``); input and output channels must be 3.

Anything else is refused with a :class:`ConvertError` naming the offending tensors: other
architectures (SwinIR, RRDB/ESRGAN, …), missing or unknown tensors, shapes that disagree with the
detected configuration, index buffers that disagree with it, non-finite values.

API: :func:`convert_state` (state dict -> configuration + tensors), :func:`convert_file`
(``.pth`` -> ``.safetensors``), :func:`official_state_dict` (our model -> the official layout,
for tests and round trips), :func:`main` (the ``tools/convert`` command line).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import pickle
import re
import sys
import types
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from . import safetensors_io
from .model import (BSA_PREFIX, RGB_MEAN, EhatConfig, EhatNet, config_to_metadata,
                    relative_position_index_sa)

__all__ = ["ConvertError", "Conversion", "convert_state", "convert_file", "extract_state_dict",
           "official_state_dict", "official_rpi_oca", "known_model", "main", "STATE_KEYS"]

# Where a checkpoint keeps its state dict, in order of preference (EMA weights first, as the
# official test options do with ``param_key_g: params_ema``).
STATE_KEYS = ("params_ema", "params", "ema", "state_dict", "model", "net_g", "generator")

# Official defaults of what the shapes cannot tell (hat_arch.py, every options/test/*.yml).
DEFAULT_CONV_SCALE = 0.01
DEFAULT_IMG_RANGE = 1.0
NUM_FEAT = 64  # reconstruction width, fixed in hat_arch.py (and in the model format)

# EHAT: parents under which SKDADDYS_Ehat.py repeats the shared branch-weight module.
_BSA_ALIAS = re.compile(
    r"^layers\.\d+(?:\.residual_group(?:\.blocks\.\d+(?:\.conv_block)?|\.overlap_attn)?)?"
    r"\.__branchattentionmodule__\.(weight_[01])$")
_BSA_MAIN = re.compile(r"^__branchattentionmodule__\.(weight_[01])$")
_BLOCK_RPI = re.compile(r"^layers\.(\d+)\.residual_group\.blocks\.(\d+)\.attn\.relative_position_index$")
_ATTN_MASK = re.compile(r"^(?:layers\.\d+\.residual_group\.blocks\.\d+\.)?attn_mask$")
_LAYER = re.compile(r"^layers\.(\d+)\.")
_UPSAMPLE = re.compile(r"^upsample\.(\d+)\.(weight|bias)$")

_REFERENCE_MODELS = (  # EHAT-SPEC.md §8 (names for the summary; detection never relies on them)
    ("HAT-S", "hat", 144, [6] * 6, 24, 24),
    ("HAT", "hat", 180, [6] * 6, 3, 30),
    ("HAT-L", "hat", 180, [6] * 12, 3, 30),
    ("EHAT", "ehat", 180, [6] * 12, 3, 30),
)


class ConvertError(ValueError):
    """The checkpoint cannot be converted; the message names the tensors at fault."""


@dataclass
class Conversion:
    """Result of :func:`convert_state`."""

    config: EhatConfig
    tensors: Dict[str, torch.Tensor]  # model-file names -> tensors (checkpoint dtype)
    dropped: List[str] = field(default_factory=list)  # buffers and aliases left out (checked)
    warnings: List[str] = field(default_factory=list)  # repaired or assumed; errors with strict
    assumed: Dict[str, str] = field(default_factory=dict)  # config keys not from shapes -> origin
    source_dtype: str = "F32"  # the checkpoint's float dtype ("mixed" when several)
    out_dtype: str = "F32"  # what convert_file wrote


def _names(keys: Sequence[str], limit: int = 8) -> str:
    keys = list(keys)
    s = ", ".join(repr(k) for k in keys[:limit])
    return s + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _shape(t) -> List[int]:
    return list(t.shape)


# --------------------------------------------------------------------------------------------
# Finding the state dict
# --------------------------------------------------------------------------------------------


def _is_state_dict(obj) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items())


def extract_state_dict(ckpt, key: Optional[str] = None) -> Tuple[Dict[str, torch.Tensor], str]:
    """The state dict inside a loaded checkpoint and where it was: ``params_ema``, ``params``, …
    (:data:`STATE_KEYS`, first found), or ``""`` for a bare state dict. ``key`` forces one."""
    if not isinstance(ckpt, Mapping):
        raise ConvertError(f"the checkpoint holds a {type(ckpt).__name__}, not a dict of tensors")
    if key is not None:
        if key not in ckpt:
            raise ConvertError(f"the checkpoint has no key {key!r} (top-level keys: {_names(ckpt)})")
        if not _is_state_dict(ckpt[key]):
            raise ConvertError(f"checkpoint[{key!r}] is not a state dict (a dict of tensors)")
        return dict(ckpt[key]), key
    for k in STATE_KEYS:
        if k in ckpt and _is_state_dict(ckpt[k]):
            return dict(ckpt[k]), k
    if _is_state_dict(ckpt):
        return dict(ckpt), ""
    raise ConvertError("no state dict in the checkpoint: expected a dict of tensors, bare or under "
                       f"one of {', '.join(STATE_KEYS)}; top-level keys: {_names(ckpt)}")


def _strip_prefix(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Remove DataParallel / DistributedDataParallel ``module.`` prefixes (repeated ones too)."""
    out = {}
    for k, v in state.items():
        name = k
        while name.startswith("module."):
            name = name[len("module."):]
        if name in out:
            raise ConvertError(f"tensor {name!r} appears both with and without the 'module.' prefix")
        out[name] = v
    return out


# --------------------------------------------------------------------------------------------
# Recognising what is not HAT/EHAT
# --------------------------------------------------------------------------------------------


def _not_hat(state: Mapping[str, torch.Tensor]) -> Optional[str]:
    """A message when ``state`` is evidently not a HAT/EHAT state dict, else None."""
    keys = list(state)
    rdb = [k for k in keys if re.search(r"(^|\.)(rdb\d|RDB\d|RRDB_trunk)", k)]
    if rdb:
        return ("this is an RRDB network (ESRGAN / Real-ESRGAN / BSRGAN), not HAT/EHAT: it has "
                f"residual-in-residual dense blocks ({_names(rdb, 3)})")
    if "conv_first.weight" not in state:
        return ("this is not a HAT/EHAT state dict: it has no 'conv_first.weight' "
                f"(first keys: {_names(keys, 6)})")
    if not any(k.startswith("layers.0.residual_group.blocks.0.") for k in keys):
        return ("this is not a HAT/EHAT state dict: it has no "
                "'layers.0.residual_group.blocks.0.*' transformer blocks "
                f"(first keys: {_names(keys, 6)})")
    has_cab = any(".conv_block." in k for k in keys)
    has_ocab = any(".residual_group.overlap_attn." in k for k in keys)
    if not has_cab and not has_ocab:
        return ("this looks like SwinIR, not HAT/EHAT: its blocks have no channel-attention block "
                "('layers.l.residual_group.blocks.i.conv_block.*') and its groups no overlapping "
                "cross-attention ('layers.l.residual_group.overlap_attn.*')")
    if "conv_after_body.0.weight" in state:
        return ("resi_connection '3conv' ('conv_after_body.0/2/4') is not supported: the model format "
                "knows '1conv' only")
    if "conv_after_body.weight" not in state:
        return ("resi_connection 'identity' (no 'conv_after_body.weight' nor 'layers.l.conv.weight') "
                "is not supported: the model format knows '1conv' only")
    if "conv_last.weight" not in state:
        if any(k.startswith("upsample.") for k in keys):
            return ("this model has the 'pixelshuffledirect' head ('upsample.0' without "
                    "'conv_before_upsample' and 'conv_last'); only 'pixelshuffle' is supported")
        return ("this model has no reconstruction head ('conv_before_upsample', 'upsample', "
                "'conv_last'): its upsampler is not 'pixelshuffle', the only one supported")
    return None


# --------------------------------------------------------------------------------------------
# Configuration from shapes
# --------------------------------------------------------------------------------------------


def _get(state, name, ndim=None) -> torch.Tensor:
    if name not in state:
        raise ConvertError(f"tensor {name!r} is missing (needed to detect the configuration)")
    t = state[name]
    if ndim is not None and t.dim() != ndim:
        raise ConvertError(f"tensor {name!r} has shape {_shape(t)}, expected {ndim} dimensions")
    return t


def _isqrt_exact(n: int) -> Optional[int]:
    r = math.isqrt(n)
    return r if r * r == n else None


def _ratio(numer: int, denom: int) -> float:
    """The float ``r`` nearest ``numer/denom`` with ``int(denom·r) == numer`` (as Python and the
    C loader compute widths), nudged up an ulp when the quotient rounds below."""
    r = numer / denom
    for _ in range(4):
        if int(denom * r) == numer:
            return r
        r = math.nextafter(r, math.inf)
    raise ConvertError(f"no ratio gives {numer} from {denom}")


def _divisor_ratio(c: int, width: int, what: str, tensor: str) -> int:
    """``ratio`` with ``c // ratio == width`` that divides ``c`` (the C loader requires it)."""
    if width < 1 or width > c or c % width:
        raise ConvertError(f"{tensor}: {what} width {width} does not divide embed_dim {c}; the model "
                           f"format stores {what} as a divisor of embed_dim")
    return c // width


def _count(state, pattern: str) -> List[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state for m in [rx.match(k)] if m})


def _contiguous(idx: List[int], what: str, prefix: str) -> int:
    if idx != list(range(len(idx))):
        missing = sorted(set(range(max(idx) + 1)) - set(idx))
        raise ConvertError(f"{what} are not numbered 0..{max(idx)}: {prefix}{missing[0]}.* is missing")
    return len(idx)


def detect_config(state: Mapping[str, torch.Tensor], bsa: bool, conv_scale: float = DEFAULT_CONV_SCALE,
                  img_range: float = DEFAULT_IMG_RANGE, rgb_mean: Sequence[float] = RGB_MEAN) -> EhatConfig:
    """The configuration of a canonical (prefix-free, alias-free) HAT/EHAT state dict."""
    w = _get(state, "conv_first.weight", 4)
    c, cin = int(w.shape[0]), int(w.shape[1])
    if cin != 3 or tuple(w.shape[2:]) != (3, 3):
        raise ConvertError(f"'conv_first.weight' has shape {_shape(w)}: the model format needs 3 input "
                           "channels (RGB) and a 3×3 conv")
    wl = _get(state, "conv_last.weight", 4)
    if int(wl.shape[0]) != 3:
        raise ConvertError(f"'conv_last.weight' has shape {_shape(wl)}: the model format needs 3 output "
                           "channels (RGB)")
    wb = _get(state, "conv_before_upsample.0.weight", 4)
    if int(wb.shape[0]) != NUM_FEAT:
        raise ConvertError(f"'conv_before_upsample.0.weight' has shape {_shape(wb)}: the reconstruction "
                           f"width must be {NUM_FEAT} as in hat_arch.py")

    # upscale from the upsample convs: 4·64 out channels per ×2 stage, or one 9·64 for ×3
    ups = _count(state, r"^upsample\.(\d+)\.weight$")
    if not ups:
        raise ConvertError("no 'upsample.N.weight': cannot tell the scale")
    if ups != list(range(0, 2 * len(ups), 2)):
        raise ConvertError(f"upsample convs at indices {ups}, expected 0, 2, 4, … (conv, PixelShuffle, …)")
    factors = []
    for i in ups:
        t = _get(state, f"upsample.{i}.weight", 4)
        out = int(t.shape[0])
        if out % NUM_FEAT or out // NUM_FEAT not in (4, 9) or int(t.shape[1]) != NUM_FEAT:
            raise ConvertError(f"'upsample.{i}.weight' has shape {_shape(t)}: expected "
                               f"[{4 * NUM_FEAT}, {NUM_FEAT}, 3, 3] (×2) or [{9 * NUM_FEAT}, {NUM_FEAT}, 3, 3] (×3)")
        factors.append(math.isqrt(out // NUM_FEAT))
    if factors == [3]:
        upscale = 3
    elif all(f == 2 for f in factors):
        upscale = 2 ** len(factors)
    else:
        raise ConvertError(f"upsample stages {factors} mix ×2 and ×3")
    if upscale not in (2, 3, 4):
        raise ConvertError(f"upscale ×{upscale} ({len(ups)} upsample stages) is not supported: "
                           "the model format knows ×2, ×3 and ×4")

    layers = _contiguous(_count(state, r"^layers\.(\d+)\."), "groups (RHAG)", "layers.")
    depths, heads = [], []
    ws = wse = hidden = None
    cm = sq = None
    for l in range(layers):
        pre = f"layers.{l}.residual_group."
        nb = _contiguous(_count(state, rf"^layers\.{l}\.residual_group\.blocks\.(\d+)\."),
                         f"blocks of group {l}", pre + "blocks.")
        if nb == 0:
            raise ConvertError(f"group {l} has no blocks ('{pre}blocks.0.*' is missing)")
        depths.append(nb)
        nh = None
        for i in range(nb):
            b = f"{pre}blocks.{i}."
            t = _get(state, b + "attn.relative_position_bias_table", 2)
            rows, h = int(t.shape[0]), int(t.shape[1])
            side = _isqrt_exact(rows)
            if side is None or side % 2 == 0:
                raise ConvertError(f"'{b}attn.relative_position_bias_table' has {rows} rows, not "
                                   "(2·window_size − 1)²")
            this_ws = (side + 1) // 2
            if ws is None:
                ws = this_ws
            elif this_ws != ws:
                raise ConvertError(f"'{b}attn.relative_position_bias_table' implies window {this_ws}, "
                                   f"earlier blocks {ws}: one window size per model")
            if nh is None:
                nh = h
            elif h != nh:
                raise ConvertError(f"'{b}attn.relative_position_bias_table' has {h} heads, block 0 of "
                                   f"group {l} has {nh}: the model format has one head count per group")
            f1 = _get(state, b + "mlp.fc1.weight", 2)
            if hidden is None:
                hidden = int(f1.shape[0])
            elif int(f1.shape[0]) != hidden:
                raise ConvertError(f"'{b}mlp.fc1.weight' has {int(f1.shape[0])} rows, earlier blocks "
                                   f"{hidden}: one mlp_ratio per model")
            a = _get(state, b + "conv_block.cab.0.weight", 4)
            s = _get(state, b + "conv_block.cab.3.attention.1.weight", 4)
            if cm is None:
                cm, sq = int(a.shape[0]), int(s.shape[0])
                cm_name, sq_name = b + "conv_block.cab.0.weight", b + "conv_block.cab.3.attention.1.weight"
        o = pre + "overlap_attn."
        t = _get(state, o + "relative_position_bias_table", 2)
        if int(t.shape[1]) != nh:
            raise ConvertError(f"'{o}relative_position_bias_table' has {int(t.shape[1])} heads, the "
                               f"blocks of group {l} have {nh}")
        side = _isqrt_exact(int(t.shape[0]))
        if side is None:
            raise ConvertError(f"'{o}relative_position_bias_table' has {int(t.shape[0])} rows, not "
                               "(window_size + overlap_window − 1)²")
        this_wse = side - ws + 1
        if wse is None:
            wse = this_wse
        elif this_wse != wse:
            raise ConvertError(f"'{o}relative_position_bias_table' implies an overlap window of "
                               f"{this_wse}, earlier groups {wse}")
        heads.append(nh)
    if wse < ws or (wse - ws) % 2:
        raise ConvertError(f"the OCAB tables imply an overlap window of {wse} for window {ws}: it must "
                           "exceed the window by an even number")
    if ws % 2:
        raise ConvertError(f"window size {ws} is odd: shifted windows need an even one")

    cfg = EhatConfig(
        arch="ehat" if bsa else "hat",
        upscale=upscale,
        embed_dim=c,
        depths=depths,
        num_heads=heads,
        window_size=ws,
        compress_ratio=_divisor_ratio(c, cm, "compress", cm_name),
        squeeze_factor=_divisor_ratio(c, sq, "squeeze", sq_name),
        conv_scale=float(conv_scale),
        overlap_ratio=_ratio(wse - ws, ws) if wse > ws else 0.0,
        mlp_ratio=_ratio(hidden, c),
        img_range=float(img_range),
        rgb_mean=[float(v) for v in rgb_mean],
        danet=any(k.startswith("danet.") for k in state),
    )
    if "absolute_pos_embed" in state:
        t = _get(state, "absolute_pos_embed", 3)
        side = _isqrt_exact(int(t.shape[1]))
        if side is None or int(t.shape[0]) != 1 or int(t.shape[2]) != c:
            raise ConvertError(f"'absolute_pos_embed' has shape {_shape(t)}, expected [1, img_size², {c}]")
        cfg.ape, cfg.img_size = True, side
    try:
        cfg.validate()
    except ValueError as e:
        raise ConvertError(f"detected configuration is not valid: {e}") from None
    return cfg


def known_model(cfg: EhatConfig) -> Optional[str]:
    """``HAT-S``, ``HAT``, ``HAT-L`` or ``EHAT`` when ``cfg`` is that reference configuration."""
    for name, arch, c, depths, cr, sq in _REFERENCE_MODELS:
        if (cfg.arch, cfg.embed_dim, cfg.depths, cfg.compress_ratio, cfg.squeeze_factor) == (arch, c, depths, cr, sq) \
                and cfg.num_heads == [6] * len(depths) and cfg.window_size == 16 and cfg.mlp_ratio == 2.0 \
                and cfg.overlap_ratio == 0.5 and not cfg.danet and not cfg.ape:
            return name
    return None


# --------------------------------------------------------------------------------------------
# Index buffers
# --------------------------------------------------------------------------------------------


def official_rpi_oca(ws: int, wse: int) -> torch.Tensor:
    """``relative_position_index_OCA`` exactly as ``HAT.calculate_rpi_oca`` builds it (with its
    negative entries): ``(yk−yq+ws−wse+1)·(ws+wse−1) + (xk−xq+ws−wse+1)``."""
    yq, xq = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
    yk, xk = torch.meshgrid(torch.arange(wse), torch.arange(wse), indexing="ij")
    yq, xq, yk, xk = yq.flatten(), xq.flatten(), yk.flatten(), xk.flatten()
    off = ws - wse + 1
    return (yk[None, :] - yq[:, None] + off) * (ws + wse - 1) + (xk[None, :] - xq[:, None] + off)


def _check_index(name: str, t: torch.Tensor, want: torch.Tensor, table_rows: int) -> None:
    if t.is_floating_point() or t.is_complex():
        raise ConvertError(f"index buffer {name!r} has float dtype {t.dtype}")
    if tuple(t.shape) != tuple(want.shape):
        raise ConvertError(f"index buffer {name!r} has shape {_shape(t)}, expected {_shape(want)} for the "
                           "window sizes the bias tables imply")
    got = torch.remainder(t.to(torch.int64), table_rows)  # PyTorch's negative indexing
    if not torch.equal(got, torch.remainder(want, table_rows)):
        bad = int((got != torch.remainder(want, table_rows)).sum())
        raise ConvertError(f"index buffer {name!r} differs from the relative-position indices of "
                           f"EHAT-SPEC.md §4 in {bad} entries; the original network would use these "
                           "indices and the converted one would not")


# --------------------------------------------------------------------------------------------
# Conversion of a state dict
# --------------------------------------------------------------------------------------------


def _float_dtype_name(dtypes) -> str:
    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}
    found = {names.get(d, str(d)) for d in dtypes}
    return found.pop() if len(found) == 1 else "mixed"


def convert_state(state: Mapping[str, torch.Tensor], conv_scale: Optional[float] = None,
                  img_range: Optional[float] = None, rgb_mean: Optional[Sequence[float]] = None,
                  hints: Optional[Mapping] = None) -> Conversion:
    """Convert an official HAT/EHAT state dict (``module.`` prefixes allowed, buffers and EHAT
    aliases included) to the model file's tensors and configuration.

    ``conv_scale``, ``img_range``, ``rgb_mean``: values the shapes cannot tell (None: the official
    defaults, or ``hints`` when given). ``hints``: a configuration dict stored beside the weights
    (``tools/train.py`` checkpoints' ``config``), used for those values and cross-checked against
    the detected ones (a disagreement is a warning). Raises :class:`ConvertError`.
    """
    if not state:
        raise ConvertError("the state dict is empty")
    state = _strip_prefix(dict(state))
    warnings: List[str] = []
    dropped: List[str] = []

    # EHAT branch weights: the shared module once, aliases checked and dropped
    main_bsa = {m.group(1): k for k in state for m in [_BSA_MAIN.match(k)] if m}
    aliases = {k: m.group(1) for k in state for m in [_BSA_ALIAS.match(k)] if m}
    bsa_vec: Dict[str, torch.Tensor] = {}
    for leaf in ("weight_0", "weight_1"):
        if leaf in main_bsa:
            bsa_vec[leaf] = state[main_bsa[leaf]]
        else:
            first = next((k for k, lf in aliases.items() if lf == leaf), None)
            if first is not None:
                bsa_vec[leaf] = state[first]
                warnings.append(f"no '{BSA_PREFIX}.{leaf}' at the top level: taken from its alias {first!r}")
    if bool(bsa_vec) and len(bsa_vec) != 2:
        have = next(iter(bsa_vec))
        raise ConvertError(f"EHAT branch weights incomplete: '{BSA_PREFIX}.{have}' without its companion "
                           f"'{BSA_PREFIX}.weight_{1 - int(have[-1])}'")
    differing = [k for k, leaf in aliases.items()
                 if tuple(state[k].shape) != tuple(bsa_vec[leaf].shape) or not torch.equal(state[k], bsa_vec[leaf])]
    if differing:
        warnings.append(f"{len(differing)} aliases of the shared branch-weight module differ from it "
                        f"({_names(differing, 3)}); the top-level module is used, as the original "
                        "network (one shared module) would")
    dropped += sorted(aliases)

    # index buffers and masks: kept aside for checks
    buffers = {}
    for k in list(state):
        if k in ("relative_position_index_SA", "relative_position_index_OCA") or _BLOCK_RPI.match(k) \
                or _ATTN_MASK.match(k):
            buffers[k] = state[k]
    core = {k: v for k, v in state.items() if k not in buffers and k not in aliases and k not in main_bsa.values()}

    msg = _not_hat(core)
    if msg:
        raise ConvertError(msg)

    hints = dict(hints or {})
    assumed: Dict[str, str] = {}

    def pick(name, given, default):
        if given is not None:
            assumed[name] = "option"
            return given
        if name in hints:
            assumed[name] = "checkpoint config"
            return hints[name]
        assumed[name] = "official default"
        return default

    cfg = detect_config(core, bool(bsa_vec),
                        conv_scale=pick("conv_scale", conv_scale, DEFAULT_CONV_SCALE),
                        img_range=pick("img_range", img_range, DEFAULT_IMG_RANGE),
                        rgb_mean=pick("rgb_mean", rgb_mean, RGB_MEAN))
    for k, v in hints.items():
        if k in ("conv_scale", "img_range", "rgb_mean") or not hasattr(cfg, k):
            continue
        if k == "img_size" and not cfg.ape:
            continue
        mine = getattr(cfg, k)
        if isinstance(mine, float) and isinstance(v, (int, float)) and math.isclose(mine, v, rel_tol=1e-9):
            continue
        if mine != v:
            warnings.append(f"the checkpoint's config says {k} = {v!r}, its tensors {mine!r}; the "
                            "tensors win")

    # buffers against the detected geometry
    ws, wse = cfg.window_size, cfg.overlap_win_size
    sa = relative_position_index_sa(ws)
    for k, t in sorted(buffers.items()):
        if k == "relative_position_index_SA" or _BLOCK_RPI.match(k):
            _check_index(k, t, sa, (2 * ws - 1) ** 2)
        elif k == "relative_position_index_OCA":
            _check_index(k, t, official_rpi_oca(ws, wse), (ws + wse - 1) ** 2)
        dropped.append(k)
    if "relative_position_index_SA" not in buffers or "relative_position_index_OCA" not in buffers:
        warnings.append("the checkpoint lacks the index buffers 'relative_position_index_SA'/'_OCA' "
                        "that every official checkpoint carries (not needed: they are computed)")

    # every tensor against the configuration
    expected = {k: tuple(v.shape) for k, v in EhatNet(cfg).state_dict().items()}
    tensors: Dict[str, torch.Tensor] = {}
    if bsa_vec:
        n0, n1 = cfg.bsa_counts()
        for leaf, need in (("weight_0", n0), ("weight_1", n1)):
            t = bsa_vec[leaf]
            if t.dim() != 1 or t.shape[0] < need:
                raise ConvertError(f"'{BSA_PREFIX}.{leaf}' has shape {_shape(t)}: this configuration uses "
                                   f"{need} values (EHAT-SPEC.md §5)")
            tensors[f"{BSA_PREFIX}.{leaf}"] = t
    missing = [k for k in expected if k not in core and not k.startswith(BSA_PREFIX + ".")]
    unknown = [k for k in core if k not in expected]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensors missing: {_names(missing)}")
        if unknown:
            parts.append(f"{len(unknown)} unknown tensors: {_names(unknown)}")
        raise ConvertError("the state dict does not match the HAT/EHAT layout of the detected "
                           f"configuration ({'; '.join(parts)})")
    wrong = [f"{k!r} {_shape(core[k])} (expected {list(expected[k])})"
             for k in expected if k in core and tuple(core[k].shape) != expected[k]]
    if wrong:
        raise ConvertError(f"{len(wrong)} tensors have shapes that disagree with the detected "
                           f"configuration: {'; '.join(wrong[:6])}" + (" …" if len(wrong) > 6 else ""))
    for k in expected:
        if k in core:
            tensors[k] = core[k]
    nonfloat = [k for k, t in tensors.items() if not t.is_floating_point()]
    if nonfloat:
        raise ConvertError(f"weights with a non-float dtype: {_names(nonfloat)}")
    bad = [k for k, t in tensors.items() if not bool(torch.isfinite(t).all())]
    if bad:
        raise ConvertError(f"weights with NaN or infinite values: {_names(bad)}")
    conv = Conversion(cfg, tensors, dropped, warnings, assumed,
                      _float_dtype_name(t.dtype for t in tensors.values()))
    return conv


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


# What a checkpoint may reference when not trusted: tensors, storages (torch handles those
# itself), plain containers and numpy arrays/scalars. Everything else stops the load.
_SAFE_GLOBALS = {
    ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"),
    ("builtins", "complex"), ("builtins", "slice"),
    ("torch", "Size"), ("torch", "Tensor"), ("torch.nn.parameter", "Parameter"),
    ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch._tensor", "_rebuild_from_type"), ("torch._tensor", "_rebuild_from_type_v2"),
    ("_codecs", "encode"),  # how protocol 2 writes bytes (numpy array data)
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
} | {("torch", n) for n in ("float16", "bfloat16", "float32", "float64", "int64", "int32", "uint8", "bool")}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "__builtin__":  # protocol 2's Python 2 name
            module = "builtins"
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"the checkpoint references {module}.{name}, which is neither a "
                                     "tensor nor a plain container")


def _restricted_pickle_module():
    """A stand-in for the ``pickle`` module whose unpickler only builds tensors, plain containers
    and numpy arrays. (torch 1.13's own ``weights_only`` loader cannot read a float outside a
    tensor, which training checkpoints hold.)"""
    mod = types.ModuleType("ehat_restricted_pickle")
    mod.__dict__.update({k: v for k, v in pickle.__dict__.items() if not k.startswith("__")})
    mod.Unpickler = _RestrictedUnpickler
    mod.load = lambda f, **kw: _RestrictedUnpickler(f, **kw).load()
    return mod


def _torch_load_restricted(path: str):
    mod = _restricted_pickle_module()
    saved = torch.serialization.pickle
    # torch 1.13 replaces any pickle_module by its module global `pickle` unless weights_only is
    # set; later versions honour the argument. Both are covered, for the duration of this call.
    torch.serialization.pickle = mod
    try:
        return torch.load(path, map_location="cpu", pickle_module=mod, weights_only=False)
    finally:
        torch.serialization.pickle = saved


def load_checkpoint(path: str, trust: bool = False):
    """``torch.load`` on the CPU; unless ``trust``, with an unpickler restricted to tensors,
    plain containers and numpy arrays (a ``.pth`` file can otherwise run arbitrary code)."""
    try:
        if trust:
            return torch.load(path, map_location="cpu", weights_only=False)
        return _torch_load_restricted(path)
    except FileNotFoundError:
        raise ConvertError(f"{path}: no such file") from None
    except Exception as e:  # noqa: BLE001 - unpickling raises many kinds
        hint = ("" if trust else " (if the file is trusted and holds more than tensors, "
                "--trust-pickle loads it with full unpickling)")
        raise ConvertError(f"{path}: cannot read it as a PyTorch checkpoint: {e}{hint}") from None


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_OUT_DTYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16"}


def convert_file(src: str, dst: str, name: Optional[str] = None, licence: Optional[str] = None,
                 dtype: str = "f32", strict: bool = False, key: Optional[str] = None,
                 conv_scale: Optional[float] = None, img_range: Optional[float] = None,
                 rgb_mean: Optional[Sequence[float]] = None, extra: Optional[Mapping[str, str]] = None,
                 trust: bool = False, write: bool = True) -> Tuple[Conversion, Dict[str, str]]:
    """Convert the checkpoint ``src`` to the model file ``dst``; returns the conversion and the
    metadata written. ``dtype``: ``f32`` (default), ``f16``, ``bf16`` or ``keep`` (the
    checkpoint's F16/BF16/F32; F64 and mixed become F32). ``strict``: every warning is an error."""
    ckpt = load_checkpoint(src, trust)
    state, where = extract_state_dict(ckpt, key)
    hints = ckpt.get("config") if isinstance(ckpt, Mapping) and isinstance(ckpt.get("config"), Mapping) else None
    conv = convert_state(state, conv_scale, img_range, rgb_mean, hints)
    if dtype == "keep":
        out_dtype = conv.source_dtype if conv.source_dtype in ("F32", "F16", "BF16") else "F32"
        if out_dtype != conv.source_dtype:
            conv.warnings.append(f"--dtype keep: the checkpoint's {conv.source_dtype} weights are written as F32")
    elif dtype in _OUT_DTYPES:
        out_dtype = _OUT_DTYPES[dtype]
    else:
        raise ConvertError(f"unknown output dtype {dtype!r} (f32, f16, bf16 or keep)")
    if out_dtype == "F16":
        big = [k for k, t in conv.tensors.items() if float(t.abs().max()) > 65504.0]
        if big:
            raise ConvertError(f"values beyond the F16 range in {_names(big)}: write F32 or BF16")
    if strict and conv.warnings:
        raise ConvertError("--strict: " + "; ".join(conv.warnings))

    cfg = conv.config
    stem = os.path.splitext(os.path.basename(src))[0]
    extra_meta = {"name": name or stem}
    if licence:
        extra_meta["license"] = licence
    extra_meta.update({
        "source_checkpoint": os.path.basename(src),
        "source_state_dict": where or "(bare)",
        "source_sha256": _sha256(src),
        "source_dtype": conv.source_dtype,
        "converted_by": "tools/convert",
        "config_detected": "from tensor shapes: arch, upscale, embed_dim, depths, num_heads, window_size, "
                           "overlap_ratio, mlp_ratio, compress_ratio, squeeze_factor, upsampler, "
                           "resi_connection" + (", danet" if cfg.danet else "") + (", ape, img_size" if cfg.ape else ""),
        "config_assumed": ", ".join(f"{k} ({v})" for k, v in conv.assumed.items()),
    })
    ref = known_model(cfg)
    if ref:
        extra_meta["reference_config"] = ref  # HAT-S, HAT, HAT-L or EHAT (EHAT-SPEC.md §8)
    if extra:
        extra_meta.update({str(k): str(v) for k, v in extra.items()})
    meta = config_to_metadata(cfg, extra_meta)
    if write:
        arrays = {k: t.detach().to(torch.float32).contiguous().numpy() for k, t in conv.tensors.items()}
        tmp = dst + ".tmp"
        safetensors_io.save_file(tmp, arrays, meta, dtype=out_dtype)
        os.replace(tmp, dst)
    conv.out_dtype = out_dtype
    return conv, meta


# --------------------------------------------------------------------------------------------
# The official layout (for tests and round trips)
# --------------------------------------------------------------------------------------------


def official_state_dict(model: EhatNet) -> Dict[str, torch.Tensor]:
    """``model``'s weights in the layout the original code saves (``HAT.state_dict()`` of
    hat_arch.py / SKDADDYS_Ehat.py): with the index buffers ``relative_position_index_SA`` and
    ``relative_position_index_OCA`` (negative entries included) and, for EHAT, the branch-weight
    module repeated under every parent that holds it, in the original registration order."""
    cfg = model.cfg
    ours = model.state_dict()
    ws, wse = cfg.window_size, cfg.overlap_win_size
    out: Dict[str, torch.Tensor] = {}
    if cfg.ape:
        out["absolute_pos_embed"] = ours["absolute_pos_embed"]
    out["relative_position_index_SA"] = relative_position_index_sa(ws).clone()
    out["relative_position_index_OCA"] = official_rpi_oca(ws, wse)
    bsa = {leaf: ours[f"{BSA_PREFIX}.{leaf}"] for leaf in ("weight_0", "weight_1")} if cfg.is_ehat else {}

    def put_bsa(prefix: str) -> None:
        for leaf, t in bsa.items():
            out[f"{prefix}{BSA_PREFIX}.{leaf}"] = t  # the same tensor, as a shared module saves

    def copy(prefix: str) -> None:
        for k, v in ours.items():
            if k.startswith(prefix) and k not in out and BSA_PREFIX not in k:
                out[k] = v

    copy("conv_first.")
    copy("patch_embed.")
    put_bsa("")
    for l, depth in enumerate(cfg.depths):
        rg = f"layers.{l}.residual_group."
        put_bsa(f"layers.{l}.")
        put_bsa(rg)
        for i in range(depth):
            b = f"{rg}blocks.{i}."
            put_bsa(b)
            for part in ("norm1.", "attn.", "conv_block."):
                copy(b + part)
            put_bsa(b + "conv_block.")
            for part in ("norm2.", "mlp."):
                copy(b + part)
        copy(rg + "overlap_attn.relative_position_bias_table")  # own parameters before children
        put_bsa(rg + "overlap_attn.")
        copy(rg + "overlap_attn.")
        copy(f"layers.{l}.conv.")
    for k in ours:  # norm, danet, conv_after_body, reconstruction head
        if k not in out and BSA_PREFIX not in k:
            out[k] = ours[k]
    return out


# --------------------------------------------------------------------------------------------
# Command line (tools/convert)
# --------------------------------------------------------------------------------------------


def _floats(s: str) -> List[float]:
    v = [float(x) for x in s.replace("[", "").replace("]", "").split(",") if x.strip()]
    if len(v) != 3:
        raise argparse.ArgumentTypeError("expected three comma-separated numbers")
    return v


def _kv(s: str) -> Tuple[str, str]:
    if "=" not in s:
        raise argparse.ArgumentTypeError("expected KEY=VALUE")
    k, v = s.split("=", 1)
    return k.strip(), v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tools/convert",
        description="Convert an official HAT / HAT-S / HAT-L / Real-HAT-GAN / EHAT .pth checkpoint to "
                    "the gst-ehatsr model format (safetensors), detecting the configuration from the "
                    "tensor shapes.",
        epilog="Run with Debian's Python (it needs torch): /usr/bin/python3 tools/convert in.pth "
               "out.safetensors. Exit status 0 on success, 1 when the checkpoint is refused, 2 on "
               "bad options.")
    p.add_argument("input", help="checkpoint (.pth): params_ema / params / bare state dict")
    p.add_argument("output", nargs="?", help="model file to write (.safetensors); omit with --dry-run")
    p.add_argument("--name", help="metadata 'name' (default: the checkpoint's file name)")
    p.add_argument("--licence", "--license", dest="licence",
                   help="metadata 'license' (SPDX id): the terms of the weights, which the converter "
                        "cannot know (the HAT repository is Apache-2.0, the Ehat one MIT)")
    p.add_argument("--dtype", choices=("f32", "f16", "bf16", "keep"), default="f32",
                   help="dtype of the weights in the output (default f32; keep = the checkpoint's)")
    p.add_argument("--strict", action="store_true",
                   help="refuse what would otherwise be a warning (aliases that differ, missing index "
                        "buffers, a stored config that disagrees with the tensors, dtype narrowing)")
    p.add_argument("--key", help=f"where the state dict is (default: first of {', '.join(STATE_KEYS)}, "
                                 "else the whole file)")
    p.add_argument("--conv-scale", type=float, help=f"conv branch weight (default {DEFAULT_CONV_SCALE})")
    p.add_argument("--img-range", type=float, help=f"input scaling (default {DEFAULT_IMG_RANGE:g})")
    p.add_argument("--rgb-mean", type=_floats, help="mean subtracted from the input (default the DIV2K "
                                                    "mean 0.4488,0.4371,0.4040)")
    p.add_argument("--meta", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="extra metadata (repeatable), e.g. training_data=DF2K")
    p.add_argument("--trust-pickle", action="store_true",
                   help="unpickle arbitrary objects (default: tensors and plain containers only)")
    p.add_argument("--dry-run", action="store_true", help="detect and report, write nothing")
    p.add_argument("-q", "--quiet", action="store_true", help="print errors and warnings only")
    return p


def _summary(cfg: EhatConfig) -> str:
    ref = known_model(cfg)
    s = (f"{cfg.arch} ×{cfg.upscale}, embed_dim {cfg.embed_dim}, depths {cfg.depths}, heads {cfg.num_heads}, "
         f"window {cfg.window_size} (OCA {cfg.overlap_win_size}, ratio {cfg.overlap_ratio:g}), "
         f"mlp {cfg.mlp_ratio:g}, compress/squeeze {cfg.compress_ratio}/{cfg.squeeze_factor}")
    if cfg.danet:
        s += ", DANet"
    if cfg.ape:
        s += f", absolute position embedding ({cfg.img_size}×{cfg.img_size})"
    return s + (f"  [{ref} configuration]" if ref else "")


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    if not a.output and not a.dry_run:
        print("convert: give an output file or --dry-run", file=sys.stderr)
        return 2
    try:
        conv, meta = convert_file(a.input, a.output or "", name=a.name, licence=a.licence, dtype=a.dtype,
                                  strict=a.strict, key=a.key, conv_scale=a.conv_scale,
                                  img_range=a.img_range, rgb_mean=a.rgb_mean, extra=dict(a.meta),
                                  trust=a.trust_pickle, write=not a.dry_run)
    except ConvertError as e:
        print(f"convert: {a.input}: refused: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"convert: cannot write {a.output}: {e}", file=sys.stderr)
        return 1
    for w in conv.warnings:
        print(f"convert: warning: {w}", file=sys.stderr)
    if not a.quiet:
        n = sum(t.numel() for t in conv.tensors.values())
        print(f"{a.input} [{meta['source_state_dict']}]: {_summary(conv.config)}")
        print(f"  {len(conv.tensors)} tensors, {n} parameters; dropped {len(conv.dropped)} buffers/aliases "
              f"(checked); assumed {meta['config_assumed']}")
        if not a.dry_run:
            print(f"  wrote {a.output} ({conv.out_dtype})")
    return 0
