"""bench/cpu-peers in its smoke mode (issue 11): hat-tiny-x2 at 32x32 and a 40x24 real frame,
one repeat, through ehat, the PyTorch reference and — when the venv bench/.venv-peers already
holds the pinned packages — ONNX Runtime and OpenVINO. Installs nothing; checks ehat fp32 against
torch (≤ 1e-4, the script's own exit status) and the peers' export (≤ 1e-3).

Run with Debian's Python and $EHAT_CLI set (meson test sets it).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(ROOT, "bench", "cpu-peers")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def _module():
    loader = importlib.machinery.SourceFileLoader("cpu_peers", BENCH)
    spec = importlib.util.spec_from_loader("cpu_peers", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def test_pins_are_exact():
    mod = _module()
    assert {"onnxruntime", "openvino", "numpy"} <= set(mod.PINS)
    for name, ver in mod.PINS.items():
        assert ver and all(part.isdigit() for part in ver.split(".")), (name, ver)


def test_smoke(tmp_path):
    ehat = os.environ.get("EHAT_CLI")
    if not (ehat and os.access(ehat, os.X_OK)):
        pytest.skip("EHAT_CLI is not set to the ehat binary")
    out = str(tmp_path / "peers.json")
    r = subprocess.run([PYTHON, BENCH, "--smoke", "--ehat", ehat, "--json", out],
                       capture_output=True, text=True, timeout=900)
    if r.returncode == 3:
        pytest.skip("torch uses the reference BLAS: " + r.stderr.strip().splitlines()[0])
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.load(open(out))
    assert doc["smoke"] and doc["repeat"] == 1
    rows = {(x["case"], x["runtime"], x["precision"]): x for x in doc["results"]}
    e = rows[("32x32", "ehat", "fp32")]
    assert e["status"] == "ok" and e["ms"] > 0 and e["rss_bytes"] > 0 and e["max_abs_diff"] <= 1e-4
    # one round in smoke mode; best and median over its timed runs, ratios best against best
    assert doc["rounds"] == 1 and 0 < e["best_ms"] <= e["ms"] and e["times_ms"]
    assert doc["steal_share"] is None or 0.0 <= doc["steal_share"] <= 1.0
    t = rows[("32x32", "torch eager", "fp32")]
    assert t["status"] == "ok" and t["ms"] > 0 and t["rss_bytes"] > 0
    # ehat bf16 is a number once supported, "n/a" until then
    assert rows[("32x32", "ehat", "bf16")]["status"] in ("ok", "n/a")
    for key in (("32x32", "onnxruntime", "fp32"), ("32x32", "openvino", "fp32"), ("32x32", "openvino", "bf16")):
        x = rows[key]
        assert x["status"] in ("ok", "skipped"), x
        if x["status"] == "skipped":
            assert x["reason"]
        else:
            assert x["ms"] > 0 and x["max_abs_diff"] is not None
            if x["precision"] == "fp32":
                assert x["max_abs_diff"] <= 1e-3
    if any(x["status"] == "skipped" for x in rows.values() if x["runtime"] in ("onnxruntime", "openvino")):
        assert not os.path.exists(os.path.join(ROOT, "bench", ".venv-peers", "bin", "python")) or \
            os.environ.get("EHAT_PEERS_VENV")
    if doc["frame"]:
        f = rows[("frame 40x24", "ehat upscale (tiled)", "fp32")]
        assert f["status"] == "ok" and f["max_abs_diff"] <= 2 / 255


def test_smoke_never_installs(tmp_path):
    """With a venv directory that does not exist, --smoke skips the peers and creates nothing
    (test_smoke covers this already when the default venv is absent)."""
    if not os.path.isdir(os.path.join(ROOT, "bench", ".venv-peers")):
        pytest.skip("no bench/.venv-peers: test_smoke ran without the peers")
    ehat = os.environ.get("EHAT_CLI")
    if not (ehat and os.access(ehat, os.X_OK)):
        pytest.skip("EHAT_CLI is not set to the ehat binary")
    venv = tmp_path / "no-venv"
    out = str(tmp_path / "peers.json")
    r = subprocess.run([PYTHON, BENCH, "--smoke", "--no-frame", "--ehat", ehat, "--venv", str(venv),
                        "--json", out], capture_output=True, text=True, timeout=900)
    if r.returncode == 3:
        pytest.skip("torch uses the reference BLAS")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not venv.exists()
    doc = json.load(open(out))
    peers = [x for x in doc["results"] if x["runtime"] in ("onnxruntime", "openvino")]
    assert peers and all(x["status"] == "skipped" and "no venv" in x["reason"] for x in peers)
