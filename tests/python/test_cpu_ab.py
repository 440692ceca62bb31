"""bench/cpu-ab: one round of the same ehat build against itself on the project's own golden
DANet model (tests/golden); it must time both, print the comparison and exit 0, and fail
(exit 1) on a model that does not load.

Run with Debian's Python and $EHAT_CLI set (meson test sets it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(ROOT, "bench", "cpu-ab")
MODEL = os.path.join(ROOT, "tests", "golden", "ehat-danet-x2", "model.safetensors")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def _ehat():
    ehat = os.environ.get("EHAT_CLI")
    if not (ehat and os.access(ehat, os.X_OK)):
        pytest.fail("EHAT_CLI is not set to the ehat binary (meson test sets it)")
    return ehat


def test_same_build_twice():
    ehat = _ehat()
    r = subprocess.run([PYTHON, BENCH, ehat, ehat, "--model", MODEL, "--size", "16x16", "--rounds", "2",
                        "--repeat", "2"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    runs = re.findall(r"^([AB])\s+([\d.]+) ms best\s+([\d.]+) ms median\s+\((\d+) runs\)", r.stdout, re.M)
    assert [x[0] for x in runs] == ["A", "B"], r.stdout
    for _, best, median, n in runs:
        assert 0 < float(best) <= float(median) and int(n) == 4
    assert re.search(r"B is [\d.]+x A's speed \(best\)", r.stdout), r.stdout


def test_failure_is_reported(tmp_path):
    ehat = _ehat()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    r = subprocess.run([PYTHON, BENCH, ehat, ehat, "--model", str(bad), "--rounds", "1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "failed" in r.stderr
