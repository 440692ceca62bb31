#!/usr/bin/env -S /usr/bin/python3
"""Train a HAT / EHAT super-resolution model and save it in the project's model format.

Recipe (after the EHAT/HAT papers, scaled down): random LR/HR crop pairs with flips and 90°
rotations; LR made by MATLAB bicubic (tools/eval.py, precomputed once per image and scale and
cached); Adam β = (0.9, 0.99); L1 loss, then an MSE fine-tuning phase at a lower learning rate;
cosine-decaying learning rate; an exponential moving average (EMA, decay 0.999) of the weights,
which is what is saved. Training progress is the larger of iterations/--iters and
time/--minutes, so the schedule completes (and the model is saved) when either runs out.

    tools/train.py --scale 2 --embed-dim 48 --depths 2,2 --heads 4 --squeeze-factor 16 \\
        --minutes 45 --threads 1 -o models/ehat-fast-x2.safetensors
    tools/train.py ... --resume            # continue from the checkpoint in --work
    tools/train.py --scale 4 --init models/ehat-fast-x2.safetensors ...   # reuse body weights
    tools/train.py --device cuda --patch 64 --batch 32 --iters 200000 ...  # a real run on a GPU

The checkpoint (``--work``/checkpoint.pt, written every ``--ckpt-minutes``) holds the model,
EMA, optimiser, iteration, elapsed time and RNG state. At the end the EMA model is evaluated on
Set5 (Y PSNR/SSIM) and written with metadata name, license, training_data, iterations,
training_time, psnr/ssim, date. Ctrl-C (SIGINT) or SIGTERM stops gracefully: checkpoint, then
the model is saved as it is.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import math
import os
import signal
import sys
import time
from typing import List, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import eval as ev  # noqa: E402
from ehat_ref.model import EhatConfig, EhatNet, save  # noqa: E402
from ehat_ref import load  # noqa: E402
from ehat_ref.threads import set_threads  # noqa: E402

DEFAULT_TRAIN = [os.path.join(ev.DEFAULT_DATA, "train", "Urban100-60"),
                 os.path.join(ev.DEFAULT_DATA, "train", "misc")]


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def list_images(dirs: List[str]) -> List[str]:
    out = []
    for d in dirs:
        if os.path.isfile(d):
            out.append(d)
            continue
        for f in sorted(os.listdir(d)):
            if f.lower().endswith((".png", ".jpg", ".jpeg", ".bmp", ".webp")):
                out.append(os.path.join(d, f))
    return out


def load_pairs(paths: List[str], s: int, cache: str, log=print) -> List[Tuple[np.ndarray, np.ndarray]]:
    """``[(lr, hr)]`` uint8 HWC; LR = MATLAB bicubic of the mod-cropped HR, cached as .npz."""
    os.makedirs(cache, exist_ok=True)
    pairs = []
    for p in paths:
        st = os.stat(p)
        key = f"{os.path.basename(os.path.dirname(p))}_{os.path.basename(p)}_{st.st_size}_{int(st.st_mtime)}_x{s}.npz"
        cp = os.path.join(cache, key)
        if os.path.exists(cp):
            z = np.load(cp)
            lr, hr = z["lr"], z["hr"]
        else:
            hr = ev.mod_crop(ev.read_image(p), s)
            lr = ev.imresize(hr, 1.0 / s)
            tmp = f"{cp}.{os.getpid()}.tmp.npz"  # concurrent trainings may fill the cache at once
            np.savez(tmp, lr=lr, hr=hr)
            os.replace(tmp, cp)
        pairs.append((lr, hr))
    log(f"{len(pairs)} training images, {sum(h.shape[0] * h.shape[1] for _, h in pairs) / 1e6:.1f} MP HR")
    return pairs


class Sampler:
    """Random aligned crops (LR ``patch``, HR ``s·patch``) with flips / rotations, area-weighted."""

    def __init__(self, pairs, s: int, patch: int, rng: np.random.Generator):
        self.pairs = [(lr, hr) for lr, hr in pairs if min(lr.shape[:2]) >= patch]
        w = np.array([lr.shape[0] * lr.shape[1] for lr, _ in self.pairs], dtype=np.float64)
        self.p = np.sqrt(w) / np.sqrt(w).sum()  # favour big images, but not proportionally
        self.s, self.patch, self.rng = s, patch, rng

    def batch(self, n: int) -> Tuple[torch.Tensor, torch.Tensor]:
        s, ps, rng = self.s, self.patch, self.rng
        lrs, hrs = [], []
        for i in rng.choice(len(self.pairs), size=n, p=self.p):
            lr, hr = self.pairs[i]
            y = int(rng.integers(0, lr.shape[0] - ps + 1))
            x = int(rng.integers(0, lr.shape[1] - ps + 1))
            a = lr[y: y + ps, x: x + ps]
            b = hr[s * y: s * (y + ps), s * x: s * (x + ps)]
            if rng.random() < 0.5:
                a, b = a[:, ::-1], b[:, ::-1]
            if rng.random() < 0.5:
                a, b = a[::-1], b[::-1]
            if rng.random() < 0.5:
                a, b = a.transpose(1, 0, 2), b.transpose(1, 0, 2)
            lrs.append(np.ascontiguousarray(a))
            hrs.append(np.ascontiguousarray(b))
        to_t = lambda L: torch.from_numpy(np.stack(L)).permute(0, 3, 1, 2).float().div_(255.0)  # noqa: E731
        return to_t(lrs), to_t(hrs)


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


def init_weights(model: nn.Module) -> None:
    """HAT's initialisation: Linear trunc-normal(0.02), biases 0, LayerNorm (1, 0)."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def copy_matching(model: nn.Module, src: EhatNet, path: str, log=print) -> None:
    """Copy every tensor of ``src`` (loaded from ``path``) whose name and shape match (e.g. the
    body of a ×2 model into a ×4 one)."""
    own = model.state_dict()
    n = 0
    for k, v in src.state_dict().items():
        if k in own and own[k].shape == v.shape:
            own[k].copy_(v)
            n += 1
    model.load_state_dict(own)
    log(f"initialised {n}/{len(own)} tensors from {path}")


def grow_from(model: nn.Module, src: EhatNet, path: str, log=print) -> None:
    """Make the residual groups that ``model`` has beyond those of ``src`` (loaded from ``path``)
    start as the identity, so that the deeper network computes exactly what ``src`` does (after
    :func:`copy_matching`): each new group's closing convolution is zero and, for EHAT, its
    branch weights are neutral (w0 = 0, w1 = 1) and the last w1 (around conv_after_body) moves
    to its new place behind the new groups' uses (spec section 5). Training then grows the new
    groups out of zero, as zero-initialised residual branches do."""
    sc, cfg = src.cfg, model.cfg
    same = ("arch", "upscale", "embed_dim", "window_size", "compress_ratio", "squeeze_factor",
            "mlp_ratio", "ape", "danet")
    diff = [k for k in same if getattr(sc, k) != getattr(cfg, k)]
    n = len(sc.depths)
    if diff or cfg.depths[:n] != sc.depths or cfg.num_heads[:n] != sc.num_heads or len(cfg.depths) <= n:
        raise ValueError(f"--grow needs a model with more groups than {path} and its first "
                         f"{n} groups, width and settings the same (differs: "
                         f"{', '.join(diff) or 'depths/heads'})")
    with torch.no_grad():
        for layer in model.layers[n:]:
            layer.conv.weight.zero_()
            layer.conv.bias.zero_()
        if cfg.is_ehat:
            n0s, n1s = sc.bsa_counts()
            n0, n1 = cfg.bsa_counts()
            w0, w1 = model.bsa.weight_0, model.bsa.weight_1
            v0, v1 = src.bsa.weight_0, src.bsa.weight_1
            w0.zero_()
            w0[:n0s] = v0[:n0s]
            w1.fill_(1.0)
            w1[:n1s - 1] = v1[:n1s - 1]
            w1[n1 - 1] = v1[n1s - 1]
    log(f"groups {n}..{len(cfg.depths) - 1} start as the identity (grown from {path})")


class Ema:
    def __init__(self, model: nn.Module, decay: float):
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module, it: int) -> None:
        d = min(self.decay, (1 + it) / (10 + it))  # warm-up: early weights are not kept for long
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.mul_(d).add_(p.detach(), alpha=1 - d)


def lr_at(progress: float, base: float, mse_start: float, final_frac: float = 0.01) -> Tuple[float, str]:
    """(learning rate, loss) at ``progress`` in [0,1]: short warm-up, cosine to ``final_frac·base``
    over the L1 phase, then the MSE phase restarts at ``0.2·base`` and decays cosine to ~0."""
    if progress < mse_start:
        t = progress / mse_start
        warm = min(1.0, progress / 0.02) if mse_start > 0 else 1.0
        return base * warm * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * t))), "l1"
    t = (progress - mse_start) / max(1e-9, 1 - mse_start)
    return 0.2 * base * (0.005 + 0.995 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))), "mse"


# --------------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------------


def fmt_time(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """One stderr line rewritten in place on a terminal; a new line every 30 s otherwise."""

    def __init__(self):
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def show(self, progress: float, msg: str, elapsed: float) -> None:
        now = time.time()
        if now - self.last < (0.5 if self.tty else 30.0):
            return
        self.last = now
        eta = elapsed * (1 - progress) / progress if progress > 0 else float("nan")
        n = 24
        bar = "#" * int(n * progress) + "-" * (n - int(n * progress))
        line = f"[{bar}] {100 * progress:5.1f}% {msg} elapsed {fmt_time(elapsed)} ETA {fmt_time(eta) if eta == eta else '?'}"
        if self.tty:
            sys.stderr.write("\r" + line + "\033[K")
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def done(self):
        if self.tty:
            sys.stderr.write("\n")


def log(msg: str) -> None:
    sys.stderr.write(f"{datetime.datetime.now():%H:%M:%S} {msg}\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def _ints(s: str):
    return [int(v) for v in s.replace("[", "").replace("]", "").split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    g = p.add_argument_group("model")
    g.add_argument("--arch", default="ehat", choices=("hat", "ehat"))
    g.add_argument("--scale", type=int, default=2, choices=(2, 3, 4))
    g.add_argument("--embed-dim", type=int, default=48)
    g.add_argument("--depths", type=_ints, default=[2, 2])
    g.add_argument("--heads", type=_ints, default=[4], help="comma list, or one value for every group")
    g.add_argument("--window", type=int, default=8)
    g.add_argument("--compress-ratio", type=int, default=3)
    g.add_argument("--squeeze-factor", type=int, default=16)
    g.add_argument("--mlp-ratio", type=float, default=2.0)
    g.add_argument("--danet", action="store_true",
                   help="add the DANet block after the body's norm (spec section 6; its gammas start at 0)")
    g.add_argument("--init", help="model file to take matching tensors from (e.g. a x2 body for x4)")
    g.add_argument("--grow", action="store_true",
                   help="with --init of a model with fewer groups: the extra groups start as the "
                   "identity, so training starts from --init's output")
    g = p.add_argument_group("training")
    g.add_argument("--train", action="append", help="image folder or file (repeatable; default: "
                   "shared data train/Urban100-60 and train/misc)")
    g.add_argument("--patch", type=int, default=48, help="LR patch size (multiple of --window)")
    g.add_argument("--batch", type=int, default=16)
    g.add_argument("--lr", type=float, default=5e-4, help="peak learning rate")
    g.add_argument("--mse-start", type=float, default=0.8,
                   help="fraction of training after which the loss is MSE (fine-tuning); 1 = L1 only")
    g.add_argument("--ema", type=float, default=0.999)
    g.add_argument("--iters", type=int, default=100000, help="iteration budget")
    g.add_argument("--minutes", type=float, default=0, help="time budget (0 = none)")
    g.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    g.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("files")
    g.add_argument("-o", "--output", required=True, help="model file to write (the EMA weights)")
    g.add_argument("--work", help="checkpoint folder (default: OUTPUT without suffix + .work)")
    g.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache", "ehat-train"),
                   help="precomputed LR cache")
    g.add_argument("--resume", action="store_true", help="continue from --work/checkpoint.pt")
    g.add_argument("--ckpt-minutes", type=float, default=3.0)
    g.add_argument("--val-minutes", type=float, default=10.0, help="Set5 PSNR of the EMA every N minutes (0 = never)")
    g = p.add_argument_group("metadata")
    g.add_argument("--name", help="default: derived from the output file name")
    g.add_argument("--license", default="CC-BY-4.0")
    g.add_argument("--eval-sets", default="Set5", help="sets measured at the end (Set5 goes into the metadata)")
    return p


def make_config(a) -> EhatConfig:
    heads = a.heads if len(a.heads) == len(a.depths) else [a.heads[0]] * len(a.depths)
    cfg = EhatConfig(arch=a.arch, upscale=a.scale, embed_dim=a.embed_dim, depths=list(a.depths),
                     num_heads=heads, window_size=a.window, compress_ratio=a.compress_ratio,
                     squeeze_factor=a.squeeze_factor, conv_scale=0.01, mlp_ratio=a.mlp_ratio,
                     danet=a.danet)
    cfg.validate()
    return cfg


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    if a.threads:
        set_threads(a.threads)
    if a.patch % a.window:
        print("train: --patch must be a multiple of --window", file=sys.stderr)
        return 2
    dev = torch.device(a.device)
    if a.device == "cuda":
        # TF32 products (10-bit mantissa, fp32 range and accumulation) are what the SR
        # trainers use on Ampere and later; the saved EMA weights stay fp32
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    work = a.work or os.path.splitext(a.output)[0] + ".work"
    os.makedirs(work, exist_ok=True)
    ckpt_path = os.path.join(work, "checkpoint.pt")
    cfg = make_config(a)

    torch.manual_seed(a.seed)
    model = EhatNet(cfg)
    init_weights(model)
    if a.init:
        src = load(a.init, dtype=torch.float32, strict=False)
        copy_matching(model, src, a.init, log)
        if a.grow:
            try:
                grow_from(model, src, a.init, log)
            except ValueError as e:
                print(f"train: {e}", file=sys.stderr)
                return 2
    elif a.grow:
        print("train: --grow needs --init", file=sys.stderr)
        return 2
    model.to(dev).train()
    ema = Ema(model, a.ema)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=a.lr, betas=(0.9, 0.99))
    it, elapsed = 0, 0.0
    rng = np.random.default_rng(a.seed)
    if a.resume and os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, map_location=dev)
        if ck["config"] != cfg.__dict__:
            print(f"train: checkpoint configuration differs from the command line: {ck['config']}", file=sys.stderr)
            return 2
        model.load_state_dict(ck["model"])
        ema.model.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        it, elapsed = ck["iter"], ck["elapsed"]
        rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"])
        log(f"resumed from {ckpt_path}: iteration {it}, {fmt_time(elapsed)} trained")
    elif a.resume:
        log(f"no checkpoint at {ckpt_path}: starting afresh")

    nparams = sum(p.numel() for p in model.parameters())
    log(f"{cfg.arch} x{cfg.upscale} C={cfg.embed_dim} depths={cfg.depths} heads={cfg.num_heads} "
        f"window={cfg.window_size} squeeze={cfg.squeeze_factor}: {nparams} parameters; device {dev}, "
        f"{torch.get_num_threads()} thread(s); batch {a.batch}×{a.patch}² LR")
    pairs = load_pairs(list_images(a.train or DEFAULT_TRAIN), cfg.upscale, a.cache, log)
    sampler = Sampler(pairs, cfg.upscale, a.patch, rng)

    budget_s = a.minutes * 60.0

    def progress_of(i: int, t: float) -> float:
        p = i / a.iters if a.iters else 0.0
        if budget_s > 0:
            p = max(p, t / budget_s)
        return min(1.0, p)

    def checkpoint():
        tmp = ckpt_path + ".tmp"
        torch.save({"config": cfg.__dict__, "model": model.state_dict(), "ema": ema.model.state_dict(),
                    "opt": opt.state_dict(), "iter": it, "elapsed": elapsed, "rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(), "args": vars(a)}, tmp)
        os.replace(tmp, ckpt_path)

    stop = {"flag": False}

    def on_signal(signum, frame):
        stop["flag"] = True
        log(f"signal {signum}: stopping after this iteration")

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    bar = Progress()
    t_start = time.time() - elapsed
    last_ckpt = last_val = time.time()
    loss_avg, last_kind = None, None
    while not stop["flag"]:
        elapsed = time.time() - t_start
        prog = progress_of(it, elapsed)
        if prog >= 1.0:
            break
        lr_now, kind = lr_at(prog, a.lr, a.mse_start)
        for gparam in opt.param_groups:
            gparam["lr"] = lr_now
        x, y = sampler.batch(a.batch)
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        out = model(x)
        loss = F.l1_loss(out, y) if kind == "l1" else F.mse_loss(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        it += 1
        ema.update(model, it)
        lv = float(loss)
        loss_avg = lv if loss_avg is None or kind != last_kind else 0.98 * loss_avg + 0.02 * lv
        last_kind = kind
        bar.show(progress_of(it, time.time() - t_start),
                 f"it {it} {kind} {loss_avg:.5f} lr {lr_now:.2e}", time.time() - t_start)
        now = time.time()
        if now - last_ckpt >= a.ckpt_minutes * 60:
            elapsed = now - t_start
            checkpoint()
            last_ckpt = now
        if a.val_minutes and now - last_val >= a.val_minutes * 60:
            r = ev.evaluate(ev.model_upscaler(ema.model), cfg.upscale, ["Set5"])["Set5"]
            bar.done()
            log(f"it {it}: EMA Set5 {r['psnr']:.2f} dB / {r['ssim']:.4f}")
            t_start += time.time() - now  # validation time does not count as training time
            last_val = time.time()
    bar.done()
    elapsed = time.time() - t_start
    checkpoint()
    log(f"stopped at iteration {it} after {fmt_time(elapsed)} of training; checkpoint {ckpt_path}")

    final = ema.model.to("cpu").float().eval()
    sets = [s for s in a.eval_sets.split(",") if s]
    res = ev.evaluate(ev.model_upscaler(final), cfg.upscale, sets) if sets else {}
    for k, r in res.items():
        log(f"{k} x{cfg.upscale}: {r['psnr']:.2f} dB / SSIM {r['ssim']:.4f}")
    name = a.name or os.path.splitext(os.path.basename(a.output))[0]
    train_dirs = a.train or DEFAULT_TRAIN
    meta = {
        "name": name,
        "license": a.license,
        "training_data": ", ".join(os.path.relpath(d, ev.DEFAULT_DATA) if d.startswith(ev.DEFAULT_DATA) else d
                                   for d in train_dirs) + f" ({len(pairs)} images, MATLAB-bicubic LR)",
        "iterations": str(it),
        "training_time": f"{elapsed / 60:.1f} min, {a.device}, {torch.get_num_threads() if a.device == 'cpu' else 1} thread(s)",
        "training_recipe": f"Adam(0.9,0.99) lr {a.lr:g} cosine, L1 then MSE from {a.mse_start:g}, EMA {a.ema:g}, "
                           f"batch {a.batch}x{a.patch}^2 LR, flips/rot90" + (f", {'grown from' if a.grow else 'init'} {os.path.basename(a.init)}" if a.init else ""),
        "date": datetime.date.today().isoformat(),
    }
    if "Set5" in res:
        meta["psnr_set5_y"] = f"{res['Set5']['psnr']:.2f}"
        meta["ssim_set5_y"] = f"{res['Set5']['ssim']:.4f}"
    for k, r in res.items():
        if k != "Set5":
            meta[f"psnr_{k.lower().replace('-', '_')}_y"] = f"{r['psnr']:.2f}"
            meta[f"ssim_{k.lower().replace('-', '_')}_y"] = f"{r['ssim']:.4f}"
    os.makedirs(os.path.dirname(os.path.abspath(a.output)), exist_ok=True)
    tmp = a.output + ".tmp"
    save(final, tmp, extra_metadata=meta)
    os.replace(tmp, a.output)
    log(f"wrote {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
