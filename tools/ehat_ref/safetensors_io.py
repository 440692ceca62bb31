"""Minimal safetensors reader/writer (struct + json + numpy, no third-party package).

Format (https://github.com/huggingface/safetensors): an 8-byte little-endian header length N,
N bytes of JSON (``{"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...,
"__metadata__": {str: str}}``), then the raw little-endian tensor data; offsets are relative to the
end of the header.

BF16 has no numpy dtype: it is read into float32 (the 16 bits are the high half of a float32) and
written from float32 by round-to-nearest-even on the dropped 16 bits.
"""

from __future__ import annotations

import json
import struct
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

__all__ = ["load_file", "save_file", "read_header", "DTYPES"]

# safetensors dtype name -> numpy dtype (little endian). "BF16" is handled separately.
DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_ITEMSIZE = {name: dt.itemsize for name, dt in DTYPES.items()}
_ITEMSIZE["BF16"] = 2

# Header size limit (the reference implementation uses 100 MB).
_MAX_HEADER = 100 * 1024 * 1024


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """uint16 bit patterns of bfloat16 -> float32."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> uint16 bfloat16 bit patterns, round to nearest even (NaN kept a quiet NaN)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    out = ((bits + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        out[nan] = ((bits[nan] >> 16) | 0x0040).astype(np.uint16)
    return out


def read_header(data: bytes) -> Tuple[dict, int]:
    """Parse and bounds-check the header of a safetensors buffer; return (header, data_start)."""
    if len(data) < 8:
        raise ValueError("safetensors: file shorter than 8 bytes")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER or 8 + n > len(data):
        raise ValueError(f"safetensors: header length {n} out of bounds (file is {len(data)} bytes)")
    header = json.loads(data[8 : 8 + n].decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("safetensors: header is not a JSON object")
    start = 8 + n
    size = len(data) - start
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in info.items()
            ):
                raise ValueError("safetensors: __metadata__ must map strings to strings")
            continue
        dtype = info.get("dtype")
        if dtype not in _ITEMSIZE:
            raise ValueError(f"safetensors: tensor {name!r} has unsupported dtype {dtype!r}")
        shape = info.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ValueError(f"safetensors: tensor {name!r} has a bad shape {shape!r}")
        begin, end = info.get("data_offsets", (None, None))
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end <= size):
            raise ValueError(f"safetensors: tensor {name!r} has data offsets out of bounds")
        nbytes = int(np.prod(shape, dtype=np.int64)) * _ITEMSIZE[dtype]
        if end - begin != nbytes:
            raise ValueError(
                f"safetensors: tensor {name!r} holds {end - begin} bytes, shape {shape} {dtype} needs {nbytes}"
            )
    return header, start


def load_file(path: str, with_dtypes: bool = False):
    """Read a safetensors file.

    Returns ``(tensors, metadata)``: ``tensors`` maps name -> numpy array (BF16 widened to float32,
    every array a writable copy), ``metadata`` is the ``__metadata__`` dict (empty if absent).
    With ``with_dtypes=True`` a third item maps name -> the dtype string stored in the file.
    """
    with open(path, "rb") as f:
        data = f.read()
    header, start = read_header(data)
    metadata = dict(header.get("__metadata__", {}))
    tensors: Dict[str, np.ndarray] = {}
    dtypes: Dict[str, str] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        buf = data[start + begin : start + end]
        if info["dtype"] == "BF16":
            arr = _bf16_to_f32(np.frombuffer(buf, dtype="<u2"))
        else:
            arr = np.frombuffer(buf, dtype=DTYPES[info["dtype"]]).copy()
        tensors[name] = arr.reshape(info["shape"])
        dtypes[name] = info["dtype"]
    if with_dtypes:
        return tensors, metadata, dtypes
    return tensors, metadata


def _numpy_dtype_name(arr: np.ndarray) -> str:
    for name, dt in DTYPES.items():
        if arr.dtype == dt or arr.dtype == dt.newbyteorder("="):
            return name
    raise ValueError(f"safetensors: no dtype for numpy {arr.dtype}")


def save_file(
    path: str,
    tensors: Mapping[str, object],
    metadata: Optional[Mapping[str, str]] = None,
    dtype: Optional[str] = None,
) -> None:
    """Write ``tensors`` (name -> numpy array or torch tensor) to ``path``.

    ``dtype`` (``"F32"``, ``"F16"``, ``"BF16"``, ``"F64"``) converts every floating tensor to that
    type; integer tensors keep theirs. Without it each array keeps its own dtype (float arrays
    must then be F64/F32/F16). Tensors are stored in name order, 8-byte aligned header.
    """
    header: Dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        arr = tensors[name]
        if hasattr(arr, "detach"):  # torch tensor
            arr = arr.detach().cpu().numpy()
        arr = np.asarray(arr)
        if dtype is not None and arr.dtype.kind == "f":
            st = dtype
        else:
            st = _numpy_dtype_name(arr)
        if st == "BF16":
            raw = _f32_to_bf16(arr.astype(np.float32)).astype("<u2").tobytes()
        else:
            raw = np.ascontiguousarray(arr, dtype=DTYPES[st]).tobytes()
        header[name] = {"dtype": st, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)  # pad so that tensor data is 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for raw in blobs:
            f.write(raw)
