"""`convert --verify` for every weight type: the source runtime's error plus what quantization costs.

    fp32 model (from the source)   -- the source runtime ------------- tolerance 2e-5 (relative)
    quantized by --weights          -- the source runtime ------------- the type's tolerance below
                                    -- our fp32 engine on the source's weights: max and RMS |Δy| (reported)
    ORT-quantized source (DynamicQuantizeLSTM), kept exact
                                    -- ORT running LSTM on the node's float32 weights ((q - zp) * scale):
                                       2e-5, the semantics fastlstm runs
                                    -- ORT running the original node (reported: ORT also quantizes x and h)
    ... requantized per row         -- the same, with the int8 tolerance

The quantized tolerances are the documented envelopes of docs/quantization.md: the largest |Δy| the
per-step bound allows for models whose recurrence forgets (forget gates below 1, inputs and weights of
PyTorch-init scale), with room: max |Δy| / max(|y|, 1) <= 5e-3 (fp16), 3e-2 (bf16, int8). A model beyond
them is one the bound does not cover (saturated or huge inputs, large weights, long memory): the error
message says so, and fp16 or fp32 is the remedy.
"""

from __future__ import annotations

import numpy as np

from fastlstm.engine import Engine
from fastlstm.errors import ConversionError, VerificationError

from . import onnx_quantized
from .verify import _onnx_runtime_output, verify, verify_input

VERIFY_TOLERANCES = {"fp32": 2e-5, "fp16": 5e-3, "bf16": 3e-2, "int8": 3e-2}


def verify_converted(source, source_spec, spec, fp32_tolerance: float = VERIFY_TOLERANCES["fp32"]) -> dict:
    """Verify `spec` (the source's spec, or `quantize(source_spec, ...)`) against the source runtime.

    Returns what was measured (stored in the file); VerificationError above the tolerance."""
    quantized_here = spec is not source_spec
    requantized = any(node.get("requantized") for node in _quantized_nodes(spec))
    tolerance = VERIFY_TOLERANCES[spec.weights] if quantized_here or requantized else fp32_tolerance
    try:
        measured = verify(source, spec, Engine(spec), tolerance=tolerance)
    except VerificationError as exc:
        if spec.weights == "fp32" or not (quantized_here or requantized):
            raise
        raise VerificationError(f"{exc}; {spec.weights} weights keep this bound only for models whose recurrence "
                                f"forgets, with moderate weights and inputs (docs/quantization.md): use fp16 "
                                f"or fp32 for this model") from None
    measured["weights"] = spec.weights
    if quantized_here:
        x = verify_input(spec)
        reference, _ = Engine(source_spec).run(x)
        ours, _ = Engine(spec).run(x)
        delta = ours.astype(np.float64) - reference
        measured["quantization"] = {"reference": "fastlstm fp32 on the source's weights",
                                    "max_abs_error": float(np.max(np.abs(delta))),
                                    "rms_error": float(np.sqrt(np.mean(delta**2)))}
    if _quantized_nodes(spec) and spec.source.get("format") == "onnx" and not (spec.pre or spec.post):
        measured["source_node"] = _against_quantized_node(source, spec)
    return measured


def _quantized_nodes(spec) -> list[dict]:
    note = spec.source.get("quantized")
    return [n for n in note.get("nodes", []) if isinstance(n, dict)] if isinstance(note, dict) else []


def _against_quantized_node(source, spec) -> dict:
    """Our output against ONNX Runtime running the original DynamicQuantizeLSTM node(s) (for the record:
    ORT quantizes x and h to uint8 every step, so this differs by ORT's own activation error)."""
    x = verify_input(spec)
    try:
        runtime, expected = _onnx_runtime_output(source, spec, x, keep_quantized=True)
    except ConversionError as exc:
        return {"error": str(exc)}
    ours, _ = Engine(spec).run(x)
    delta = ours.astype(np.float64) - expected
    return {"runtime": f"{runtime} {onnx_quantized.OP_TYPE}", "max_abs_error": float(np.max(np.abs(delta))),
            "rms_error": float(np.sqrt(np.mean(delta**2)))}
