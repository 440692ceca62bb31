"""tools/train.py smoke test: a few iterations of a tiny model, resume, metadata."""

import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))
pytest.importorskip("PIL")
import eval as ev  # noqa: E402
from ehat_ref import load, load_file  # noqa: E402


def test_train_smoke(tmp_path):
    rng = np.random.default_rng(0)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(2):
        yy, xx = np.mgrid[0:72, 0:80]
        img = 127 + 100 * np.sin(xx / (3 + i))[..., None] * np.cos(yy / 4)[..., None] + rng.normal(0, 5, (72, 80, 3))
        ev.write_image(str(imgs / f"{i}.png"), np.clip(img, 0, 255).astype(np.uint8))
    out = str(tmp_path / "m.safetensors")
    base = [sys.executable, os.path.join(ROOT, "tools", "train.py"), "--embed-dim", "12", "--depths", "1",
            "--heads", "2", "--squeeze-factor", "4", "--patch", "16", "--batch", "2", "--threads", "1",
            "--train", str(imgs), "--cache", str(tmp_path / "cache"), "--eval-sets", "", "-o", out]
    r = subprocess.run(base + ["--iters", "3"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(base + ["--iters", "5", "--resume"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stderr and "iteration 3" in r.stderr
    _, meta = load_file(out)
    assert meta["iterations"] == "5" and meta["license"] == "CC-BY-4.0" and meta["name"] == "m"
    m = load(out)
    assert m.cfg.embed_dim == 12 and m.cfg.upscale == 2


def test_train_images_from_unpacked_tree(tmp_path):
    """tools/train_images.py keeps only the listed photographs, the largest file of each, halved."""
    import train_images as ti

    root = tmp_path / "root"
    pattern = ti.SOURCES["plasma-workspace-wallpapers"]["pattern"]
    rng = np.random.default_rng(1)
    for name, sizes in (("Path", ((40, 24), (64, 40))), ("Grey", ((32, 20),)), ("Kite", ((64, 40),))):
        d = root / os.path.dirname(pattern.format(name=name))
        d.mkdir(parents=True)
        for w, h in sizes:
            ev.write_image(str(d / f"{w}x{h}.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    # Lomiri's photographs carry a licence each; its renders (umang) are not on the list
    lomiri = root / "usr/share/backgrounds"
    lomiri.mkdir(parents=True)
    for name in ("Bridge_by_Sander_Klootwijk", "umang_by_Abhishek_Mudgal"):
        ev.write_image(str(lomiri / f"{name}.jpg"), rng.integers(0, 256, (24, 36, 3), dtype=np.uint8))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "train_images.py"), "-o", str(out),
                        "--from-dir", str(root)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    # Kite is flat art, not on the list; the other listed photographs are missing and reported.
    assert sorted(os.listdir(out)) == ["lomiri-Bridge_by_Sander_Klootwijk.png", "plasma-Grey.png",
                                       "plasma-Path.png"]
    assert "has no BytheWater" in r.stderr and "has no Aqua" in r.stderr
    assert "lomiri-Bridge_by_Sander_Klootwijk.png: 18x12 (CC-BY-SA-4.0)" in r.stdout
    path = ev.read_image(str(out / "plasma-Path.png"))
    assert path.shape == (20, 32, 3)  # the 64x40 file, halved
    src = ev.read_image(str(root / os.path.dirname(pattern.format(name="Path")) / "64x40.png"))
    np.testing.assert_array_equal(path, ev.imresize(src, 0.5))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "train_images.py"), "-o", str(out),
                        "--from-dir", str(tmp_path / "empty")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "no image written" in r.stderr


def test_gpu_train_pack_and_calls(tmp_path):
    """tools/gpu-carry: pack-train.py packs images as lossless WebP within a budget; train.sh
    trains, checkpoints into $OUT, resumes in the next call, and a call cut by its time limit
    still ends with rc 0, a checkpoint and a model (run here on the CPU)."""
    rng = np.random.default_rng(2)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        ev.write_image(str(imgs / f"{i}.png"), rng.integers(0, 256, (64, 72, 3), dtype=np.uint8))
    pack = tmp_path / "pack"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gpu-carry", "pack-train.py"), str(imgs),
                        "--budget-mib", str(2 * 64 * 72 * 3 * 1.2 / 2 ** 20), "-o", str(pack)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    packed = sorted(os.listdir(pack / "data"))
    assert len(packed) == 2 and all(p.endswith(".webp") for p in packed)  # random pixels: ~raw size
    assert "1 left out" in r.stdout
    np.testing.assert_array_equal(ev.read_image(str(pack / "data" / packed[0])), ev.read_image(str(imgs / "0.png")))

    def call(out, *extra):
        env = dict(os.environ, EHAT_TRAIN_DIR=str(pack), EHAT_TRAIN_DEVICE="cpu", OUT=str(out),
                   PYTHON=sys.executable)
        return subprocess.run(["bash", os.path.join(ROOT, "tools", "gpu-carry", "train.sh"), "2", "10", *extra,
                               "--embed-dim", "12", "--depths", "1", "--heads", "2", "--squeeze-factor", "4",
                               "--patch", "16", "--batch", "2", "--threads", "1"],
                              capture_output=True, text=True, timeout=300, env=env)

    r = call(tmp_path / "o1", "5", "--iters", "2")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "o1" / "checkpoint-x2.pt").exists() and (tmp_path / "o1" / "ehat-fast-x2.safetensors").exists()
    r = call(tmp_path / "o2", "5", "--iters", "3")
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stderr and "iteration 2" in r.stderr
    assert load_file(str(tmp_path / "o2" / "ehat-fast-x2.safetensors"))[1]["iterations"] == "3"
    # cut by the call's limit (0.1 min) long before --iters: still a clean end
    r = call(tmp_path / "o3", "0.1", "--iters", "100000")
    assert r.returncode == 0, r.stderr
    assert "signal 15" in r.stderr
    assert (tmp_path / "o3" / "checkpoint-x2.pt").exists()


def test_set_threads_limits_openblas_too():
    """--threads N must bind the BLAS torch multiplies in, not only torch's own pool: OpenBLAS
    (pthread build, installed by tools/setup-debian.sh) otherwise runs a spinning thread per core."""
    code = ("import sys, torch; sys.path.insert(0, sys.argv[1])\n"
            "from ehat_ref.threads import set_threads, blas_threads\n"
            "x = torch.ones(256, 256); (x @ x).sum()\n"
            "before = blas_threads(); set_threads(1)\n"
            "print(before, blas_threads(), torch.get_num_threads())\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    r = subprocess.run([sys.executable, "-c", code, os.path.join(ROOT, "tools")], capture_output=True,
                       text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    before, after, torch_threads = r.stdout.split()
    # torch's GEMMs run in the system OpenBLAS here; None would mean the lookup is broken
    assert before != "None", "OpenBLAS not found in the torch process"
    assert after == "1" and torch_threads == "1"


def test_grow_starts_as_the_smaller_model(tmp_path):
    """--grow: a 3-group EHAT grown from a trained-looking 1-group one computes the same output
    (float64), so training starts from the smaller model's quality; a mismatched width is refused."""
    import torch

    import train as tr
    from ehat_ref.model import EhatConfig, EhatNet, save

    torch.manual_seed(3)
    small_cfg = EhatConfig(arch="ehat", upscale=2, embed_dim=12, depths=[2], num_heads=[2], window_size=4,
                           compress_ratio=3, squeeze_factor=4)
    small = EhatNet(small_cfg)
    tr.init_weights(small)
    with torch.no_grad():
        # trained branch weights: the last w1 (around conv_after_body) must move when groups are added
        n0, n1 = small_cfg.bsa_counts()
        small.bsa.weight_0[:n0] = torch.rand(n0) * 0.5
        small.bsa.weight_1[:n1] = 0.5 + torch.rand(n1)
        small.conv_after_body.weight.mul_(5.0)
    path = str(tmp_path / "small.safetensors")
    save(small, path)

    args = tr.build_parser().parse_args(["--embed-dim", "12", "--depths", "2,1,2", "--heads", "2", "--window", "4",
                                         "--squeeze-factor", "4", "--init", path, "--grow", "-o", "x"])
    big = EhatNet(tr.make_config(args))
    tr.init_weights(big)
    src = load(path)
    tr.copy_matching(big, src, path, log=lambda *_: None)
    tr.grow_from(big, src, path, log=lambda *_: None)
    x = torch.rand(1, 3, 12, 16, dtype=torch.float64)
    ref = load(path, dtype=torch.float64).eval()
    with torch.no_grad():
        a, b = ref(x), big.double().eval()(x)
    assert (a - b).abs().max().item() < 1e-12
    assert big.layers[1].conv.weight.abs().max().item() == 0.0  # the new groups do start at zero
    # without --grow the same tensors give another network
    plain = EhatNet(tr.make_config(args))
    tr.init_weights(plain)
    tr.copy_matching(plain, src, path, log=lambda *_: None)
    with torch.no_grad():
        assert (plain.double().eval()(x) - a).abs().max().item() > 1e-3

    wide = tr.build_parser().parse_args(["--embed-dim", "16", "--depths", "2,2", "--heads", "2", "--window", "4",
                                         "--squeeze-factor", "4", "-o", "x"])
    with pytest.raises(ValueError, match="embed_dim"):
        tr.grow_from(EhatNet(tr.make_config(wide)), src, path)
