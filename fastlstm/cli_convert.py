"""`fastlstm convert`: source detection, conversion, optional verification, atomic write.

Part of the CLI layer: the one place in fastlstm that imports `converters` (lazily)."""

from __future__ import annotations

import os

from .api import save
from .engine import Engine
from .errors import ConversionError

VERIFY_TOLERANCE = 2e-5  # max |ours - source| / max(|source|, 1)
_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


def source_kind(path: str) -> str:
    """'onnx' or 'torch', from the file name, else from its first bytes."""
    lower = path.lower()
    if lower.endswith(".onnx"):
        return "onnx"
    if lower.endswith(_TORCH_SUFFIXES):
        return "torch"
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):  # torch.save writes a zip archive
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors: u64 length, then JSON
        return "torch"
    return "onnx"


def convert_file(src: str, dst: str, node: str | None = None, prefix: str | None = None,
                 verify: bool = False, lstm_only: bool = False) -> dict:
    """Convert `src` into the packed file `dst`; with verify, compare against the source runtime first.

    ONNX: the whole model when every op around the LSTM is covered, else the LSTM part with report["note"]
    naming what was covered and the first op that was not (lstm_only: the LSTM part, no note).
    Nothing is written when conversion or verification fails."""
    import warnings

    import converters

    if not os.path.isfile(src):
        raise ConversionError(f"source file {src!r} does not exist")
    kind = source_kind(src)
    if kind == "onnx":
        if prefix is not None:
            raise ConversionError("--prefix applies to PyTorch sources; this is an ONNX model (use --node)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the note comes back in spec.source, printed once by the CLI
            spec = converters.from_onnx(src, node=node, lstm_only=lstm_only)
    else:
        if node is not None:
            raise ConversionError("--node applies to ONNX sources; this is a PyTorch file (use --prefix)")
        spec = converters.from_torch(src, prefix=prefix)
    report = {"summary": summary(spec)}
    if spec.source.get("not_covered"):
        report["note"] = spec.source["not_covered"]
    if verify:
        measured = converters.verify(src, spec, Engine(spec), tolerance=VERIFY_TOLERANCE)
        spec.verify = measured
        report["verify"] = measured
    save(spec, dst)
    return report


def summary(spec) -> str:
    kind = "bidirectional " if spec.num_directions == 2 else ""
    proj = f", projection {spec.proj_size}" if spec.proj_size else ""
    lstm = (f"{spec.num_layers}-layer {kind}LSTM, input {spec.input_size}, hidden {spec.hidden_size}{proj}")
    if spec.pre or spec.post:  # a whole model: its layers in order around the LSTM
        lstm = " -> ".join([x.describe() for x in spec.pre] + [lstm] + [x.describe() for x in spec.post])
    return f"{lstm} (from {spec.source.get('format', 'unknown')})"
