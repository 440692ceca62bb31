#!/usr/bin/env -S /usr/bin/python3
"""Packs training images into .gpu-train/ (git-excluded) for a training run on the device
machine, which has PyTorch and a GPU but none of ../shared and no network.

Everything a device call takes along must fit in 64 MiB (the checkout's tracked files
included), so the images are stored as lossless WebP (a quarter smaller than PNG) and packed
in order until --budget-mib is reached; what did not fit is listed. Then, on the device
(tools/ is tracked, so tools/gpu-carry/train.sh travels with the checkout):

    run(carry=[".gpu-train"], command="bash tools/gpu-carry/train.sh 2 24 8 --init models/ehat-fast-x2.safetensors")

train.sh SCALE TOTAL_MIN CALL_MIN trains for CALL_MIN minutes of a TOTAL_MIN schedule (resuming from .gpu-train/work-xS when it holds a
checkpoint) and leaves the model and the checkpoint in $OUT; copy the checkpoint back into
.gpu-train/work-xS/ before the next call to continue (docs/models.md, "On this project's device machine").

    tools/gpu-carry/pack-train.py [--budget-mib 46] [DIR ...]   # default: the shared training sets
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import train  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dirs", nargs="*", help="image folders (default: tools/train.py's defaults)")
    p.add_argument("--budget-mib", type=float, default=46.0,
                   help="size of the packed images; the checkout (~9 MiB) and a checkpoint carried "
                        "back (~7 MiB for the fast models) need the rest of the 64 MiB")
    p.add_argument("-o", "--output", default=os.path.join(ROOT, ".gpu-train"))
    a = p.parse_args(argv)
    from PIL import Image

    exclude = os.path.join(ROOT, ".git", "info", "exclude")
    if os.path.isdir(os.path.dirname(exclude)):
        lines = open(exclude).read().split("\n") if os.path.exists(exclude) else []
        if "/.gpu-train/" not in lines:
            with open(exclude, "a") as f:
                f.write("/.gpu-train/\n")
    data = os.path.join(a.output, "data")
    os.makedirs(data, exist_ok=True)
    budget = int(a.budget_mib * 2 ** 20)
    used, packed, left = 0, 0, []
    for path in train.list_images(a.dirs or train.DEFAULT_TRAIN):
        buf = io.BytesIO()
        with Image.open(path) as im:
            im.convert("RGB").save(buf, "WEBP", lossless=True, method=4)
        b = buf.getvalue()
        if used + len(b) > budget:
            left.append(path)
            continue
        name = f"{os.path.basename(os.path.dirname(path))}-{os.path.splitext(os.path.basename(path))[0]}.webp"
        with open(os.path.join(data, name), "wb") as f:
            f.write(b)
        used += len(b)
        packed += 1
    print(f"pack-train: {packed} images, {used / 2 ** 20:.1f} MiB in {data}")
    if left:
        print(f"pack-train: {len(left)} left out (over --budget-mib): " + ", ".join(os.path.basename(x) for x in left))
    try:
        names = subprocess.run(["git", "-C", ROOT, "ls-files", "-z"], capture_output=True).stdout.split(b"\0")
        tracked = sum(os.path.getsize(os.path.join(ROOT, n.decode())) for n in names
                      if n and os.path.isfile(os.path.join(ROOT, n.decode())))
        print(f"pack-train: with the tracked files ({tracked / 2 ** 20:.1f} MiB) a call carries "
              f"{(tracked + used) / 2 ** 20:.1f} MiB of 64, before any checkpoint")
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
