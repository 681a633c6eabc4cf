"""Top-level functions: load / save packed files and thread control."""

from __future__ import annotations

import os

from . import format as _format
from .engine import Engine
from .errors import ConversionError, InputError
from .spec import ModelSpec
from .threads import get_num_threads, set_num_threads

__all__ = ["get_num_threads", "load", "save", "set_num_threads"]


def save(spec: ModelSpec, path: str | os.PathLike) -> None:
    """Write a spec to a packed .fastlstm file (atomically)."""
    _format.save(spec, path)


def load(path: str | os.PathLike, weights: str | None = None) -> Engine:
    """Open a packed .fastlstm file and build its Engine. Raises FormatError for a bad file.

    weights: None runs the file's own weights; 'fp16' | 'bf16' | 'int8' quantizes an fp32 file at load
    (docs/quantization.md). A quantized file loads only as its own type: InputError otherwise (requantizing
    compounds the rounding, and fp32 cannot bring back what was rounded away)."""
    spec = _format.read_spec(path)
    if weights is not None and weights != spec.weights:
        from .quantize import check_weights_name, quantize

        try:
            check_weights_name(weights)
        except ConversionError as exc:
            raise InputError(f"weights: {exc}") from None
        if spec.weights != "fp32":
            raise InputError(f"{os.fspath(path)} holds {spec.weights} weights; it loads only as {spec.weights} "
                             f"(quantize the fp32 model to get {weights})")
        spec = quantize(spec, weights)
    return Engine(spec, release_source=_format.release)
