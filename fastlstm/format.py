"""The packed model file: a safetensors-compatible container, versioned, no pickle, mmap-able.

Layout (little endian):  u64 header_len | header_len bytes of JSON | tensor bytes
The JSON maps tensor names to {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]} (offsets
relative to the first tensor byte, contiguous, no holes) and holds "__metadata__": {"fastlstm": JSON}
with the format version, sizes, per layer/direction cell options, source and verify results.
Any safetensors reader can open the file; ours validates every field before touching tensor bytes.

Tensors per layer l, direction d: layers.l.d.W (4H, I), .R (4H, Hout), .b (4H,), optional .peephole (3, H)
and .proj (Hout, H). Version 2 (written) adds two things to version 1, both additive:
- the metadata key "weights" ('fp32' | 'fp16' | 'bf16' | 'int8', see fastlstm.quantized): W and R are then
  stored as F16, BF16 (the uint16 bit patterns) or I8, and int8 adds layers.l.d.W.scale and
  layers.l.d.R.scale, (4H,) F32, one scale per gate row;
- the layers around the LSTM (fastlstm.layers): metadata "pre" and "post" list layer entries
  (layers.layer_meta), their tensors are named "pre.K.table", "post.K.weight", ... (shapes implied by the
  entries); both lists are empty for a bare LSTM.
Every tensor but a quantized W and R is F32. Version 1 files (no "weights": all F32; no layers) are still read.
"""

from __future__ import annotations

import itertools
import json
import math
import mmap
import os
import stat
import struct

import numpy as np

from .atomic import write_atomically
from .errors import FormatError, SpecError
from .layers import layer_arrays, layer_from, layer_meta, layer_tensors
from .quantized import WEIGHT_TYPES, QuantizedMatrix
from .spec import CellOptions, DirectionSpec, ModelSpec

FORMAT_NAME = "fastlstm"
FORMAT_VERSION = 2  # written; 2 added the weight type (quantized W and R) and the layers around the LSTM
READ_VERSIONS = (1, 2)
MAX_HEADER_BYTES = 16 << 20  # a header this large is not one we wrote: refuse before reading it
MAX_DIM = 1 << 20  # hidden/input sizes beyond this are refused before any allocation
MAX_LAYERS = 64  # layers before / after the LSTM in one file
_ALIGN = 64  # header is space-padded so tensor data starts on a cache line
# safetensors dtype of W and R per weight type, and the little-endian numpy dtype of every stored dtype
WEIGHT_DTYPES = {"fp32": "F32", "fp16": "F16", "bf16": "BF16", "int8": "I8"}
NUMPY_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"), "I8": np.dtype("i1")}


def _tensor_names(spec_like: dict, l: int, d: int) -> dict[str, tuple[int, ...]]:
    """Expected tensor name -> shape for one direction, derived from the metadata alone."""
    H, Hout = spec_like["hidden_size"], spec_like["proj_size"] or spec_like["hidden_size"]
    I = spec_like["input_size"] if l == 0 else spec_like["num_directions"] * Hout
    prefix = f"layers.{l}.{d}."
    names = {prefix + "W": (4 * H, I), prefix + "R": (4 * H, Hout), prefix + "b": (4 * H,)}
    if spec_like.get("weights") == "int8":
        names[prefix + "W.scale"] = names[prefix + "R.scale"] = (4 * H,)
    if spec_like["cells"][l][d]["peephole"]:
        names[prefix + "peephole"] = (3, H)
    if spec_like["proj_size"]:
        names[prefix + "proj"] = (Hout, H)
    return names


def save(spec: ModelSpec, path: str | os.PathLike) -> None:
    """Write `spec` to `path` atomically (a temporary file renamed into place)."""
    spec.validate()
    cells = [
        [
            {"options": ds.options.to_json(), "peephole": ds.peephole is not None,
             "reverse": bool(ds.reverse)}
            for ds in layer
        ]
        for layer in spec.layers
    ]
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "weights": spec.weights,
        "input_size": int(spec.input_size),
        "hidden_size": int(spec.hidden_size),
        "num_layers": int(spec.num_layers),
        "num_directions": int(spec.num_directions),
        "proj_size": int(spec.proj_size),
        "cells": cells,
        "source": spec.source,
        "verify": spec.verify,
    }
    arrays: list[tuple[str, np.ndarray]] = []
    for l, layer in enumerate(spec.layers):
        for d, ds in enumerate(layer):
            prefix = f"layers.{l}.{d}."
            arrays += [*_weight_arrays(prefix + "W", ds.W), *_weight_arrays(prefix + "R", ds.R), (prefix + "b", ds.b)]
            if ds.peephole is not None:
                arrays.append((prefix + "peephole", ds.peephole))
            if ds.proj is not None:
                arrays.append((prefix + "proj", ds.proj))
    for stack, layers in (("pre", spec.pre), ("post", spec.post)):
        meta[stack] = [layer_meta(layer) for layer in layers]
        for k, layer in enumerate(layers):
            arrays += [(f"{stack}.{k}.{suffix}", np.ascontiguousarray(array, dtype="<f4"))
                       for suffix, array in layer_arrays(layer).items()]
    header: dict = {"__metadata__": {FORMAT_NAME: json.dumps(meta, sort_keys=True)}}
    offset = 0
    for name, array in arrays:
        header[name] = {"dtype": _DTYPE_CODES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-(8 + len(header_bytes)) % _ALIGN)

    tensors = (np.ascontiguousarray(array).tobytes() for _, array in arrays)  # one at a time
    write_atomically(path, itertools.chain([struct.pack("<Q", len(header_bytes)), header_bytes], tensors))


def _weight_arrays(name: str, matrix) -> list[tuple[str, np.ndarray]]:
    """W or R as stored: one tensor, plus its scales for int8; little-endian dtypes of NUMPY_DTYPES."""
    if not isinstance(matrix, QuantizedMatrix):
        return [(name, np.ascontiguousarray(matrix, dtype="<f4"))]
    stored = np.ascontiguousarray(matrix.data, dtype=NUMPY_DTYPES[WEIGHT_DTYPES[matrix.kind]])
    if matrix.kind != "int8":
        return [(name, stored)]
    return [(name, stored), (name + ".scale", np.ascontiguousarray(matrix.scale, dtype="<f4"))]


# the dtype code of each stored numpy dtype (uint16 arrays are bf16 bit patterns)
_DTYPE_CODES = {dtype: code for code, dtype in NUMPY_DTYPES.items()}


def read_spec(path: str | os.PathLike) -> ModelSpec:
    """Open a packed file (memory-mapped, read-only) and return its validated spec.

    Every header field is checked against the file size and the metadata before any tensor is
    viewed, so a file that lies gets a FormatError, never an out-of-bounds read or a huge allocation.
    """
    path = os.fspath(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block open(), a device never end
            raise FormatError(f"{path}: not a regular file")
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 8:
                raise FormatError(f"{path}: {size} bytes is too short for a fastlstm file (need a header)")
            buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise FormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_spec(buffer, where=path)


def release(array: np.ndarray) -> None:
    """Drop the memory-mapped file pages behind `array` (a tensor of a spec from read_spec) from this
    process's memory once its values are packed. The mapping stays valid: a later read faults the pages in
    again from the page cache. A no-op for arrays not backed by a read-only mmap (or without madvise)."""
    owner = array.base
    while owner is not None and not isinstance(owner, mmap.mmap):
        owner = owner.obj if isinstance(owner, memoryview) else getattr(owner, "base", None)
    if owner is None or not hasattr(owner, "madvise") or array.nbytes == 0:
        return
    start = array.ctypes.data - np.frombuffer(owner, np.uint8).ctypes.data
    page = mmap.PAGESIZE
    first = start - start % page
    end = min(start + array.nbytes, len(owner))
    try:
        owner.madvise(mmap.MADV_DONTNEED, first, end - first)
    except (OSError, ValueError):
        pass


def parse_spec(buffer, where: str = "<bytes>") -> ModelSpec:
    """Parse a packed model from any bytes-like buffer (bytes, mmap). Arrays are views into it."""
    try:
        data = memoryview(buffer).cast("B")
    except TypeError:
        raise FormatError(f"{where}: expected the file's bytes, got {type(buffer).__name__}") from None
    size = len(data)
    if size < 8:
        raise FormatError(f"{where}: {size} bytes is too short for a fastlstm file")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
        raise FormatError(
            f"{where}: header claims {header_len} bytes but the file has {size - 8} after its length "
            f"(truncated, or not a fastlstm file)"
        )
    try:
        header = json.loads(bytes(data[8 : 8 + header_len]))
        meta = json.loads(header["__metadata__"][FORMAT_NAME])
    except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: absurdly nested JSON
        raise FormatError(f"{where}: not a fastlstm file (no readable fastlstm header)") from None
    if not isinstance(header, dict) or not isinstance(meta, dict):
        raise FormatError(f"{where}: malformed header")
    spec_like = _check_meta(meta, where)
    data_start, data_len = 8 + header_len, size - 8 - header_len

    expected: dict[str, tuple[int, ...]] = {}
    for l in range(spec_like["num_layers"]):
        for d in range(spec_like["num_directions"]):
            expected.update(_tensor_names(spec_like, l, d))
    for stack in ("pre", "post"):
        for k, entry in enumerate(spec_like[stack]):
            expected.update({f"{stack}.{k}.{suffix}": shape for suffix, shape in entry["tensors"].items()})
    found = {k for k in header if k != "__metadata__"}
    if found != set(expected):
        missing, extra = sorted(set(expected) - found), sorted(found - set(expected))
        raise FormatError(
            f"{where}: tensors do not match the metadata "
            f"(missing {_show(missing)}, unexpected {_show(extra)})"
        )

    spans = []
    arrays: dict[str, np.ndarray] = {}
    for name, shape in expected.items():
        entry = header[name]
        want = WEIGHT_DTYPES[spec_like["weights"]] if name.endswith((".W", ".R")) else "F32"
        if not isinstance(entry, dict) or entry.get("dtype") != want:
            dtype = entry.get("dtype") if isinstance(entry, dict) else entry
            raise FormatError(f"{where}: tensor {name} has dtype {_show(dtype)}, expected {want!r} "
                              f"(metadata weights={spec_like['weights']!r})")
        if entry.get("shape") != list(shape):
            raise FormatError(
                f"{where}: tensor {name} has shape {_show(entry.get('shape'))}, "
                f"metadata implies {list(shape)}"
            )
        offsets = entry.get("data_offsets")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in offsets)
        ):
            raise FormatError(f"{where}: tensor {name} has malformed data_offsets {_show(offsets)}")
        begin, end = offsets
        nbytes = NUMPY_DTYPES[want].itemsize * math.prod(shape)  # Python ints: a lying shape cannot overflow
        if not 0 <= begin <= end <= data_len or end - begin != nbytes:
            raise FormatError(
                f"{where}: tensor {name} spans bytes [{begin}, {end}) but needs {nbytes} bytes "
                f"inside the {data_len} data bytes present"
            )
        spans.append((begin, end, name))
        raw = data[data_start + begin : data_start + end]
        arrays[name] = np.frombuffer(raw, dtype=NUMPY_DTYPES[want]).reshape(shape)
    spans.sort()
    for (_, e0, n0), (b1, _, n1) in zip(spans, spans[1:], strict=False):
        if b1 < e0:
            raise FormatError(f"{where}: tensors {n0} and {n1} overlap")

    layers = []
    for l in range(spec_like["num_layers"]):
        layer = []
        for d in range(spec_like["num_directions"]):
            prefix, cell = f"layers.{l}.{d}.", spec_like["cells"][l][d]
            layer.append(
                DirectionSpec(
                    W=_stored_weights(arrays, prefix + "W", spec_like["weights"]),
                    R=_stored_weights(arrays, prefix + "R", spec_like["weights"]),
                    b=arrays[prefix + "b"],
                    peephole=arrays.get(prefix + "peephole"),
                    proj=arrays.get(prefix + "proj"),
                    options=cell["options_obj"],
                    reverse=cell["reverse"],
                )
            )
        layers.append(layer)
    spec = ModelSpec(
        input_size=spec_like["input_size"],
        hidden_size=spec_like["hidden_size"],
        num_layers=spec_like["num_layers"],
        num_directions=spec_like["num_directions"],
        proj_size=spec_like["proj_size"],
        layers=layers,
        source=meta.get("source") if isinstance(meta.get("source"), dict) else {},
        verify=meta.get("verify") if isinstance(meta.get("verify"), dict) else {},
        pre=_layers_of(spec_like, "pre", arrays),
        post=_layers_of(spec_like, "post", arrays),
    )
    try:
        return spec.validate()
    except SpecError as exc:
        raise FormatError(f"{where}: {exc}") from None


def _stored_weights(arrays: dict, name: str, weights: str):
    """W or R from its tensor(s): a float32 array, or a QuantizedMatrix (checked by spec.validate())."""
    if weights == "fp32":
        return arrays[name]
    return QuantizedMatrix(weights, arrays[name], arrays.get(name + ".scale"))


def _check_meta(meta: dict, where: str) -> dict:
    """Validate the metadata's sizes and cell list; return it with CellOptions objects attached."""
    if meta.get("format") != FORMAT_NAME:
        raise FormatError(f"{where}: not a fastlstm file (format {_show(meta.get('format'))})")
    version = meta.get("format_version")
    if type(version) is not int or version not in READ_VERSIONS:  # 1.0 and true are not version 1
        raise FormatError(
            f"{where}: format version {_show(version)} is not supported "
            f"(this fastlstm reads {', '.join(map(str, READ_VERSIONS))})"
        )
    weights = meta.get("weights", "fp32") if version == 1 else meta.get("weights")
    if version == 1 and weights != "fp32" or not isinstance(weights, str) or weights not in WEIGHT_TYPES:
        raise FormatError(f"{where}: metadata weights={_show(weights)} is not one of "
                          f"{', '.join(WEIGHT_TYPES)}{' (version 1 files are fp32)' if version == 1 else ''}")
    meta["weights"] = weights
    limits = {"input_size": (1, MAX_DIM), "hidden_size": (1, MAX_DIM), "num_layers": (1, 1024),
              "num_directions": (1, 2), "proj_size": (0, MAX_DIM)}
    for key, (lo, hi) in limits.items():
        value = meta.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise FormatError(f"{where}: metadata {key}={_show(value)} is not an integer in [{lo}, {hi}]")
    if meta["proj_size"] >= meta["hidden_size"] and meta["proj_size"]:
        raise FormatError(
            f"{where}: proj_size {meta['proj_size']} must be smaller than hidden_size {meta['hidden_size']}"
        )
    cells = meta.get("cells")
    if not isinstance(cells, list) or len(cells) != meta["num_layers"] or not all(
        isinstance(layer, list) and len(layer) == meta["num_directions"] for layer in cells
    ):
        raise FormatError(f"{where}: metadata 'cells' must be num_layers x num_directions entries")
    for layer in cells:
        for cell in layer:
            if not isinstance(cell, dict):
                raise FormatError(f"{where}: malformed cell entry {_show(cell)}")
            try:
                cell["options_obj"] = CellOptions.from_json(cell.get("options") or {})
            except SpecError as exc:
                raise FormatError(f"{where}: {_cut(str(exc), 300)}") from None
            cell["peephole"], cell["reverse"] = bool(cell.get("peephole")), bool(cell.get("reverse"))
    for key in ("pre", "post"):  # version 2: the layers around the LSTM; version 1 has none
        entries = meta.get(key, []) if version >= 2 else []
        if not isinstance(entries, list) or len(entries) > MAX_LAYERS:
            raise FormatError(f"{where}: metadata {key!r} must be a list of at most {MAX_LAYERS} layer entries")
        checked = []
        for k, entry in enumerate(entries):
            try:
                checked.append({"meta": entry, "tensors": layer_tensors(entry, MAX_DIM)})
            except SpecError as exc:
                raise FormatError(f"{where}: {key}[{k}]: {_cut(str(exc), 300)}") from None
        meta[key] = checked
    return meta


def _layers_of(spec_like: dict, key: str, arrays: dict) -> list:
    layers = []
    for k, entry in enumerate(spec_like[key]):
        own = {suffix: arrays[f"{key}.{k}.{suffix}"] for suffix in entry["tensors"]}
        layers.append(layer_from(entry["meta"], own))
    return layers


def _show(value, limit: int = 80) -> str:
    """repr of a value read from an untrusted header, cut short (a lying header may hold megabytes)."""
    return _cut(repr(value), limit)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
