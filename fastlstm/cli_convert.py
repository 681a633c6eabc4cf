"""`fastlstm convert`: source detection, conversion, optional verification, atomic write.

Part of the CLI layer: the one place in fastlstm that imports `converters` (lazily)."""

from __future__ import annotations

import os

from .api import save
from .engine import Engine
from .errors import ConversionError

VERIFY_TOLERANCE = 2e-5  # max |ours - source| / max(|source|, 1)
_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".jit", ".safetensors")


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
                 verify: bool = False, weights: str | None = None, lstm_only: bool = False) -> dict:
    """Convert `src` into the packed file `dst`; with verify, compare against the source runtime first.
    weights: 'fp32' | 'fp16' | 'bf16' | 'int8' stores W and R so (None: as the source has them).

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
        with warnings.catch_warnings():  # the note comes back in spec.source, printed once by the CLI; other
            # warnings (onnx's, numpy's) go on to the CLI's capture, which counts them in a failure's line
            warnings.filterwarnings("ignore", message="converted the LSTM part only", category=UserWarning)
            spec = converters.from_onnx(src, node=node, lstm_only=lstm_only)
    else:
        if node is not None:
            raise ConversionError("--node applies to ONNX sources; this is a PyTorch file (use --prefix)")
        spec = converters.from_torch(src, prefix=prefix)
    source_spec = spec
    if weights is not None:
        spec = converters.quantize(spec, weights)
    report = {"summary": summary(spec)}
    if spec.source.get("not_covered"):
        report["note"] = spec.source["not_covered"]
    if verify:
        if spec.weights == "fp32":
            measured = converters.verify(src, spec, Engine(spec), tolerance=VERIFY_TOLERANCE)
        else:  # the type's tolerance, + the error against fp32 / against ORT's quantized node
            from converters.quantized_verify import verify_converted

            measured = verify_converted(src, source_spec, spec, fp32_tolerance=VERIFY_TOLERANCE)
        spec.verify = measured
        report["verify"] = measured
    save(spec, dst)
    return report


def list_file(src: str) -> str:
    """`convert --list`: one line per LSTM in `src`."""
    import converters

    if not os.path.isfile(src):
        raise ConversionError(f"source file {src!r} does not exist")
    entries = converters.list_lstms(src)
    lines = [f"{src} ([default]: what convert takes without --node / --prefix):"]
    lines += [f"  {entry.describe()}" for entry in entries]
    # names come from the file: escape what a terminal would act on
    return "\n".join("".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in line) for line in lines)


def summary(spec) -> str:
    kind = "bidirectional " if spec.num_directions == 2 else ""
    proj = f", projection {spec.proj_size}" if spec.proj_size else ""
    weights = "" if spec.weights == "fp32" else f", {spec.weights} weights"
    lstm = f"{spec.num_layers}-layer {kind}LSTM, input {spec.input_size}, hidden {spec.hidden_size}{proj}{weights}"
    if spec.pre or spec.post:  # a whole model: its layers in order around the LSTM
        lstm = " -> ".join([x.describe() for x in spec.pre] + [lstm] + [x.describe() for x in spec.post])
    return f"{lstm} (from {spec.source.get('format', 'unknown')})"
