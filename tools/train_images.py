#!/usr/bin/env -S /usr/bin/python3
"""Fetch free photographs from Debian packages and prepare them as extra training images.

The shared training set (Urban100-60 and a few Manga109 pages and scikit-image photos) is mostly
buildings and line art. Debian ships some free, high-resolution natural photographs; this tool
downloads the packages that hold them (`apt-get download`, no root needed), unpacks them
(`dpkg -x`), keeps only the listed photographs (the same packages also hold renders and flat
digital art, which teach a super-resolution network nothing about natural texture), and writes
each one as a PNG downscaled by --downscale with the MATLAB-bicubic `imresize` of tools/eval.py.

Why downscale: the wallpapers are JPEG files. Halving them averages away most of the
compression blocks and ringing, so the network learns to restore detail, not to reproduce
JPEG artefacts. This is what DIV2K-style pipelines do with camera images too.

    tools/train_images.py -o ~/ehat-extra            # then: tools/train.py --train ~/ehat-extra ...

Nothing here is an evaluation image: Set5, Set14 and Urban100 are not in these packages.
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile
from typing import Dict, List

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import eval as ev  # noqa: E402

# package -> the photographs to keep and their licences, as each package's copyright file states
# them. The same packages also hold renders and flat art (Plasma's other wallpapers, Lomiri's
# umang and Infinite-Sea, MATE's abstract and desktop folders), which are left out.
SOURCES: Dict[str, Dict] = {
    "plasma-workspace-wallpapers": {
        "pattern": "usr/share/wallpapers/{name}/contents/images/*",
        "names": ["BytheWater", "ColdRipple", "ColorfulCups", "EveningGlow", "FallenLeaf", "Grey",
                  "OneStandsOut", "Path"],
        "licence": "GPL-2+ (KDE Visual Design Group; photographers named in each wallpaper's metadata)",
    },
    # Photographs by the Ubuntu/UBports community, each under its own licence.
    "lomiri-wallpapers-16.04": {
        "pattern": "usr/share/backgrounds/{name}.jpg",
        "names": {
            "Bridge_by_Sander_Klootwijk": "CC-BY-SA-4.0",
            "Dragonfly_by_Bolly": "CC-BY-SA-4.0",
            "Picture_0B_by_freespace": "CC-BY-4.0",
            "Picture_1A_by_freespace": "CC-BY-4.0",
            "Wine_by_Jakkub_Mede": "CC-BY-4.0",
            "aitzgorri_by_Aitzol_Berasategi": "CC-BY-4.0",
            "free_by_Peter_Nerlich": "CC-BY-SA-4.0",
            "friends_by_Aitzol_Berasategi": "CC-BY-4.0",
            "greentock_by_Peter_Nerlich": "CC-BY-SA-4.0",
            "life_by_Aitzol_Berasategi": "CC-BY-4.0",
            "picosdeeuropa_by_Aitzol_Berasategi": "CC-BY-4.0",
            "seeding_by_Clements_Engelhardt": "CC0-1.0",
            "sunset_by_Aitzol_Berasategi": "CC-BY-4.0",
        },
    },
    "lomiri-wallpapers-20.04": {
        "pattern": "usr/share/backgrounds/{name}.jpg",
        "names": {"Kleiber_by_Lukas_Baubkus": "CC-BY-SA-3.0"},
    },
    # MATE's "nature" folder: macro and landscape photographs (2005-2008).
    "mate-backgrounds": {
        "pattern": "usr/share/backgrounds/mate/nature/{name}.jpg",
        "names": ["Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird",
                  "RainDrops", "Storm", "TwoWings", "Wood", "YellowFlower"],
        "licence": "GPL-2+ (MATE; authors in the package's AUTHORS and copyright files)",
    },
}


def photographs(src: Dict) -> Dict[str, str]:
    """name -> licence of one SOURCES entry (a list shares the package's licence)."""
    names = src["names"]
    if isinstance(names, dict):
        return dict(names)
    return {name: src["licence"] for name in names}


def largest(paths: List[str]) -> str:
    """The file with the most pixels, from the WxH.ext names that Plasma wallpapers use."""
    def area(p: str) -> int:
        try:
            w, h = os.path.splitext(os.path.basename(p))[0].split("x")
            return int(w) * int(h)
        except ValueError:
            return 0
    return max(paths, key=area)


def fetch(package: str, into: str) -> str:
    """Download one package into `into` and unpack it there; returns the unpacked root."""
    subprocess.run(["apt-get", "download", package], cwd=into, check=True,
                   stdout=subprocess.DEVNULL)
    debs = glob.glob(os.path.join(into, f"{package}_*.deb"))
    if not debs:
        raise RuntimeError(f"apt-get download {package} left no .deb in {into}")
    root = os.path.join(into, package)
    subprocess.run(["dpkg", "-x", debs[0], root], check=True)
    return root


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--output", required=True, help="folder for the PNG files")
    p.add_argument("--downscale", type=float, default=2.0,
                   help="divide each side by this (MATLAB bicubic, antialiased); 1 keeps the size")
    p.add_argument("--from-dir", help="an already unpacked root (dpkg -x) instead of downloading")
    a = p.parse_args(argv)
    if a.downscale < 1:
        print("train_images: --downscale must be at least 1", file=sys.stderr)
        return 2
    os.makedirs(a.output, exist_ok=True)
    written = 0
    with tempfile.TemporaryDirectory() as tmp:
        for package, src in SOURCES.items():
            root = a.from_dir or fetch(package, tmp)
            for name, licence in photographs(src).items():
                found = glob.glob(os.path.join(root, src["pattern"].format(name=name)))
                if not found:
                    print(f"train_images: {package} has no {name}; skipped", file=sys.stderr)
                    continue
                img = ev.read_image(largest(found))
                if a.downscale != 1:
                    img = ev.imresize(img, 1.0 / a.downscale)
                out = os.path.join(a.output, f"{package.split('-')[0]}-{name}.png")
                ev.write_image(out, img)
                written += 1
                print(f"{out}: {img.shape[1]}x{img.shape[0]} ({licence})")
    if not written:
        print("train_images: no image written", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
