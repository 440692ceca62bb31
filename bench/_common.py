"""Shared parts of the CPU benchmark scripts (bench/cpu-vs-torch, bench/cpu-peers).

Imports only the standard library at the top (numpy, torch and tools/ehat_ref are imported where
used), so that a worker can run under any Python 3 — the peers' venv has neither torch nor the
project's reference.

Also a worker entry point, run in a subprocess by the scripts so that each measured process's
peak RSS is its own:

    /usr/bin/python3 bench/_common.py torch --threads N [--model M --input IN --output OUT
                                                        --repeat R --warmup W]

(without --input it only probes torch's BLAS and prints JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "tools")
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)

# Debian's python3 has python3-torch; the `python3` on PATH may not.
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# ---------------------------------------------------------------------------------------------
# Process helpers
# ---------------------------------------------------------------------------------------------


def _vm_rss(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


# A small launcher between this process and the measured command. Linux carries the peak RSS of
# the address space a process execs from into its ru_maxrss (and a forked child's address space is
# a copy of this, possibly large, Python process — with torch imported, hundreds of MiB), so the
# command is forked from a fresh `python -I -S` (≈ 7 MiB) which reports its child's ru_maxrss.
_LAUNCHER = r"""
import os, signal, sys
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    except OSError as e:
        sys.stderr.write("%s: %s\n" % (sys.argv[2], e))
    os._exit(127)
_, st, ru = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(ru.ru_maxrss * 1024))
if os.WIFSIGNALED(st):
    signal.signal(os.WTERMSIG(st), signal.SIG_DFL)
    os.kill(os.getpid(), os.WTERMSIG(st))
sys.exit(os.waitstatus_to_exitcode(st))
"""


def run_measured(cmd, env=None, timeout=None, rss_limit=None):
    """Run ``cmd``; return (returncode, stdout, stderr, peak_rss_bytes, wall_s).

    The peak RSS is the command's own ru_maxrss (wait4 in a small launcher, see _LAUNCHER; it
    includes the launcher's ≈ 7 MiB, not this process's size). With ``rss_limit`` (bytes) the
    command is killed once its resident set exceeds it (the return code is then -9 and stderr ends
    with a line saying so); with ``timeout`` (s) once it runs longer.
    """
    t0 = time.monotonic()
    killed = None
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(mode="r", prefix="ehat-rss-") as rssf:
        p = subprocess.Popen([sys.executable, "-I", "-S", "-c", _LAUNCHER, rssf.name] + list(cmd),
                             stdout=out, stderr=err, env=env, start_new_session=True)
        deadline = None if timeout is None else t0 + timeout
        while True:
            if p.poll() is not None:
                break
            if deadline is not None and time.monotonic() > deadline:
                killed = f"killed: ran longer than {timeout:g} s"
            elif rss_limit is not None and sum(_vm_rss(c) for c in _children(p.pid)) > rss_limit:
                killed = f"killed: resident set above {rss_limit / 2**30:.1f} GiB"
            if killed:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
                break
            time.sleep(0.01)
        wall = time.monotonic() - t0
        rssf.seek(0)
        txt = rssf.read().strip()
        rss = int(txt) if txt.isdigit() else None
        out.seek(0)
        err.seek(0)
        e = err.read().decode(errors="replace")
        if killed:
            e += ("\n" if e and not e.endswith("\n") else "") + killed + "\n"
        return (p.returncode, out.read().decode(errors="replace"), e, rss, wall)


def thread_env(threads, base=None):
    env = dict(os.environ if base is None else base)
    for k in THREAD_ENV:
        env[k] = str(threads)
    return env


def last_json(out):
    """The JSON object a worker printed last (its last line that parses), or {}."""
    for line in reversed(out.strip().splitlines()):
        try:
            v = json.loads(line)
        except ValueError:
            continue
        if isinstance(v, dict):
            return v
    return {}


def parse_json_output(out):
    """The JSON object printed by `ehat bench --json` (the whole output, else the last line that
    parses)."""
    try:
        return json.loads(out)
    except ValueError:
        v = last_json(out)
        if v:
            return v
    print("warning: `ehat bench --json` printed no JSON", file=sys.stderr)
    return {}


def tail(text, n=2000):
    return text.strip()[-n:]


# ---------------------------------------------------------------------------------------------
# BLAS of torch
# ---------------------------------------------------------------------------------------------


def libblas_realpath():
    """Where libblas.so.3 (as the dynamic linker finds it) points: `readlink -f` of it."""
    candidates = []
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.strip().startswith("libblas.so.3 ") and ("x86-64" in line or "aarch64" in line):
                candidates.append(line.rsplit("=>", 1)[-1].strip())
    except OSError:
        pass
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"):
        candidates.append(os.path.join(d, "libblas.so.3"))
    for c in candidates:
        if os.path.exists(c):
            return c, os.path.realpath(c)
    return None, None


def classify_blas(mapped, blas_info):
    """(kind, ok) from the libraries a torch process maps and torch's BLAS_INFO build setting."""
    low = [m.lower() for m in mapped]
    if any("mkl" in m for m in low) or blas_info == "mkl":
        return "MKL", True
    if any("openblas" in m for m in low):
        return "OpenBLAS", True
    if any("blis" in m for m in low):
        return "BLIS", True
    if any("atlas" in m for m in low):
        return "ATLAS", True
    ref = [m for m in mapped if os.path.basename(m).startswith("libblas.so")]
    if ref:
        return f"reference BLAS ({ref[0]})", False
    return f"unknown (BLAS_INFO={blas_info}, no BLAS library mapped)", True


def torch_cmd(threads, extra):
    """Command and environment of the torch worker (Debian's python3)."""
    cmd = [PYTHON, os.path.abspath(__file__), "torch", "--threads", str(threads)] + list(extra)
    return cmd, thread_env(threads)


def probe_torch_blas(threads):
    cmd, env = torch_cmd(threads, [])
    rc, out, err, _, _ = run_measured(cmd, env=env, timeout=300)
    if rc != 0:
        raise RuntimeError(f"torch probe failed ({rc}): {tail(err)}")
    return last_json(out)


def check_torch_blas(threads):
    """Print which BLAS torch uses; return (probe, kind, libblas realpath), or None (after printing
    why on stderr) when it is the reference BLAS, which the scripts refuse to report."""
    probe = probe_torch_blas(threads)
    kind, ok = classify_blas(probe["mapped"], probe["blas_info"])
    link, real = libblas_realpath()
    print(f"torch {probe['torch_version']}, BLAS_INFO={probe['blas_info']}, torch threads {probe['threads']}")
    print(f"torch maps: {', '.join(probe['mapped']) or '(no BLAS library)'}")
    print(f"readlink -f {link}: {real}")
    print(f"torch BLAS: {kind}")
    if not ok:
        print("\nREFUSED: torch uses the reference BLAS (Debian's libblas3), which is many times slower\n"
              "than an optimised BLAS; a comparison against it would be meaningless. Switch with\n"
              "    apt-get install libopenblas0-pthread\n"
              "(or `update-alternatives --config libblas.so.3-x86_64-linux-gnu`) and run again.",
              file=sys.stderr)
        return None
    return probe, kind, real


# ---------------------------------------------------------------------------------------------
# Torch worker (runs in a subprocess so that its peak RSS is its own)
# ---------------------------------------------------------------------------------------------


def torch_worker(a) -> int:
    import torch

    torch.set_num_threads(a.threads)
    x = torch.ones(64, 64)
    (x @ x).sum()  # make sure BLAS is loaded and used
    mapped = sorted({line.split()[-1] for line in open("/proc/self/maps")
                     if any(k in line for k in ("blas", "mkl", "lapack", "blis", "atlas"))
                     and "/" in line.split()[-1]})
    info = {"mapped": mapped, "torch_version": torch.__version__, "threads": torch.get_num_threads()}
    cfg = torch.__config__.show()
    info["blas_info"] = next((s.split("=", 1)[1] for s in cfg.replace(",", " ").split()
                              if s.startswith("BLAS_INFO=")), "?")
    if a.input is None:  # probe only
        print(json.dumps(info))
        return 0
    from ehat_ref import load, upscale, load_file, save_file

    model = load(a.model, dtype=torch.float32)
    tensors, _ = load_file(a.input)
    lr = torch.from_numpy(tensors["image"]).float()
    times = []
    for i in range(a.warmup + a.repeat):
        t0 = time.perf_counter()
        y = upscale(model, lr)
        dt = (time.perf_counter() - t0) * 1000.0
        if i >= a.warmup:
            times.append(dt)
    save_file(a.output, {"image": y.contiguous()}, dtype="F32")
    info.update(median_ms=statistics.median(times), times_ms=times)
    print(json.dumps(info))
    return 0


# ---------------------------------------------------------------------------------------------
# Inputs, models, outputs
# ---------------------------------------------------------------------------------------------


def make_model(preset, seed, path):
    """A random-weight model of a tools/make_model.py preset; True when written."""
    rc = subprocess.run([PYTHON, os.path.join(TOOLS, "make_model.py"), "--preset", preset,
                         "--seed", str(seed), "-o", path]).returncode
    if rc != 0:
        print(f"make_model --preset {preset} failed", file=sys.stderr)
    return rc == 0


def make_input(path, w, h, seed):
    """A seeded random input ``image`` [1,3,h,w] in [0,1) as a safetensors file."""
    import numpy as np
    from ehat_ref import save_file

    rng = np.random.default_rng(seed)
    save_file(path, {"image": rng.random((1, 3, h, w), dtype=np.float32)})


def max_abs_diff(path_a, path_b):
    """(max |a − b| of the ``image`` tensors of two safetensors files, None) or (None, why)."""
    import numpy as np
    from ehat_ref import load_file

    a = load_file(path_a)[0].get("image")
    b = load_file(path_b)[0].get("image")
    if a is None or b is None:
        return None, "no tensor 'image'"
    if a.shape != b.shape:
        return None, f"shapes differ: {list(a.shape)} vs {list(b.shape)}"
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))), None


# ---------------------------------------------------------------------------------------------
# Arguments and formatting
# ---------------------------------------------------------------------------------------------


def parse_size(s):
    try:
        w, h = s.lower().split("x")
        w, h = int(w), int(h)
        if w <= 0 or h <= 0:
            raise ValueError
        return w, h
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WxH, e.g. 64x64, not {s!r}")


def fmt_ms(v):
    return "-" if v is None else f"{v:.1f}"


def fmt_mib(v):
    return "-" if v is None else f"{v / 2**20:.0f}"


def fmt_num(v, spec):
    return "-" if v is None else format(v, spec)


def num(d, key):
    """A numeric value from a JSON object, or None when missing / not a number."""
    v = d.get(key) if isinstance(d, dict) else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def print_table(head, rows, left=()):
    """Print ``rows`` (tuples of strings) under ``head``, right-aligned but for the column indices
    in ``left``."""
    left = set(left)
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]

    def line(cells):
        return "  ".join(c.ljust(wd) if i in left else c.rjust(wd)
                         for i, (c, wd) in enumerate(zip(cells, widths))).rstrip()
    print()
    print(line(head))
    for row in rows:
        print(line(row))


def cpu_times():
    """(busy, steal) seconds of all CPUs from /proc/stat, or None where it is not readable."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    steal = v[7] if len(v) > 7 else 0
    busy = sum(v[:3]) + sum(v[5:7])  # user nice system irq softirq
    return busy / hz, steal / hz


def steal_share(t0, t1):
    """Share of the CPU time the hypervisor gave to other guests between two cpu_times():
    a virtual machine's benchmarks are only as steady as this is low."""
    if not t0 or not t1:
        return None
    busy, steal = t1[0] - t0[0], t1[1] - t0[1]
    return steal / (busy + steal) if busy + steal > 0 else 0.0


def host_line(threads):
    import platform

    return (f"host: {platform.node()}  cpus: {len(os.sched_getaffinity(0))}  threads: {threads}  "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}  "
            f"load: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


def _main(argv=None) -> int:
    p = argparse.ArgumentParser(description="bench worker (internal)")
    p.add_argument("worker", choices=["torch"])
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--model")
    p.add_argument("--input")
    p.add_argument("--output")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--warmup", type=int, default=0)
    a = p.parse_args(argv)
    return torch_worker(a)


if __name__ == "__main__":
    sys.exit(_main())
