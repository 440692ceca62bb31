"""One thread limit for PyTorch and the BLAS under it.

Debian's python3-torch does its matrix products in the system BLAS (``libblas.so.3``), which is
OpenBLAS once ``libopenblas0-pthread`` is installed (tools/setup-debian.sh installs it). That
OpenBLAS starts a thread per core whatever ``torch.set_num_threads`` says, and its threads spin
while they wait. Two ``tools/train.py --threads 1`` runs on a 2-core machine therefore ran four
busy threads: measured 2026-11-26, 50 instead of 66 iterations a minute for the ×2 model.
The environment (``OPENBLAS_NUM_THREADS``) is read only when the library loads, too late once
torch is imported, so the limit is set through OpenBLAS's own call, as threadpoolctl does.
"""

from __future__ import annotations

import ctypes
import os
from typing import Optional

# sonames of the OpenBLAS builds Debian ships (pthread, openmp, serial share the soname)
_OPENBLAS = ("libopenblas.so.0", "libopenblasp-r0.so", "libopenblas.so")


def _loaded_openblas() -> Optional[ctypes.CDLL]:
    """The OpenBLAS this process has already loaded, or None (never loads one)."""
    for name in _OPENBLAS:
        try:
            lib = ctypes.CDLL(name, mode=os.RTLD_NOLOAD | ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        if hasattr(lib, "openblas_set_num_threads"):
            return lib
    return None


def blas_threads() -> Optional[int]:
    """How many threads the loaded OpenBLAS uses, or None when none is loaded."""
    lib = _loaded_openblas()
    return int(lib.openblas_get_num_threads()) if lib is not None else None


def set_threads(n: int) -> None:
    """torch.set_num_threads(n) and the same limit for OpenBLAS (n >= 1)."""
    import torch

    torch.set_num_threads(n)
    lib = _loaded_openblas()
    if lib is not None:
        lib.openblas_set_num_threads(ctypes.c_int(n))
