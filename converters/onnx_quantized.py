"""com.microsoft DynamicQuantizeLSTM (what onnxruntime.quantization.quantize_dynamic writes for an LSTM)
-> fastlstm int8 weights.

The node takes LSTM's inputs 0-7 and attributes (no `layout`), except that W and R are int8 or uint8 and
stored transposed, plus four quantization inputs (ONNX Runtime's contrib operator schema, checked
against ORT 1.32 by experiment: tests/test_onnx_quantized.py):

    W (D, I, 4H)  R (D, H, 4H)          (ONNX LSTM: W (D, 4H, I), R (D, 4H, H)); gate order i, o, f, c
    8 W_scale, 9 W_zero_point, 10 R_scale, 11 R_zero_point:
      (D,) per tensor, or (D, 4H) per gate row ("per channel");  w = (q - zero_point) * scale

Conversion keeps the weights exact where fastlstm's symmetric int8 (q in [-127, 127], one float32 scale
per gate row) can hold them: when every q - zero_point lies in [-127, 127] (what quantize_dynamic writes:
int8, zero point 0) the integers and the scale (repeated per row for per-tensor scales) are kept as they
are. Otherwise (uint8 with an off-centre zero point, int8 values of -128 at zero point 0, ...) that
matrix is requantized per row from its float32 values (fastlstm.quantize.to_int8_rows), which adds at
most max|row| / 254 per weight; `source["quantized"]` records which matrices were requantized.
ONNX Runtime also quantizes the activations x and h to uint8 on every step; fastlstm keeps them float32
(docs/quantization.md has the measured difference).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fastlstm.errors import ConversionError
from fastlstm.quantize import to_int8_rows
from fastlstm.quantized import INT8_LIMIT, QuantizedMatrix, as_float32

OP_TYPE, DOMAIN = "DynamicQuantizeLSTM", "com.microsoft"
SCALE_INPUTS = {"W": (8, 9), "R": (10, 11)}  # matrix -> (scale input, zero point input)


def is_quantized_lstm(node) -> bool:
    return node.op_type == OP_TYPE and node.domain == DOMAIN


@dataclass
class QuantizedWeights:
    """One node's W and R. W, R: float32 dequantized in ONNX LSTM layout and gate order, (D, 4H, I) and
    (D, 4H, H) (the shape checks and ONNX Runtime's verification model use them); q/scales the integers
    (D, 4H, K) int16 = q - zero_point and the scales (D, 4H) float32, ONNX gate order."""

    W: np.ndarray
    R: np.ndarray
    q: dict
    scales: dict
    exact: dict  # "W" / "R" -> whether fastlstm's int8 holds the node's weights exactly
    per: dict  # "W" / "R" -> "tensor" | "row": how the node's scales were given

    def direction(self, d: int, gate_order: tuple[int, ...]) -> tuple[QuantizedMatrix, QuantizedMatrix]:
        """Direction d's W and R as canonical int8 matrices (gate blocks taken in `gate_order`)."""
        out = []
        for name in ("W", "R"):
            q, scale = self.q[name][d], self.scales[name][d]  # (4H, K), (4H,)
            H = q.shape[0] // 4
            rows = np.concatenate([np.arange(g * H, (g + 1) * H) for g in gate_order])
            if self.exact[name]:
                out.append(QuantizedMatrix("int8", np.ascontiguousarray(q[rows], np.int8),
                                           np.ascontiguousarray(scale[rows], np.float32)))
            else:
                data, row_scale = to_int8_rows(np.ascontiguousarray(getattr(self, name)[d][rows]))
                out.append(QuantizedMatrix("int8", data, row_scale))
        return out[0], out[1]

    def note(self) -> dict:
        """What source["quantized"] records for this node."""
        return {"op": f"{DOMAIN}.{OP_TYPE}", "scales": dict(self.per),
                "requantized": [name for name in ("W", "R") if not self.exact[name]]}


def read_weights(index, rec, inputs: list[str], where: str) -> QuantizedWeights:
    """Fold and check a DynamicQuantizeLSTM node's W, R and their scales / zero points."""
    names = {}
    for slot, label in ((1, "W"), (2, "R"), (8, "W_scale"), (9, "W_zero_point"), (10, "R_scale"),
                        (11, "R_zero_point")):
        if len(inputs) <= slot or not inputs[slot]:
            raise ConversionError(f"{where}: required input {slot} ({label}) of {OP_TYPE} is missing")
        names[inputs[slot]] = f"{where} input {label}"
    arrays = index.fold(rec.scope, names)
    out = QuantizedWeights(W=None, R=None, q={}, scales={}, exact={}, per={})
    for name, slot in (("W", 1), ("R", 2)):
        q = arrays[inputs[slot]]
        scale_slot, zero_slot = SCALE_INPUTS[name]
        scale, zero = arrays[inputs[scale_slot]], arrays[inputs[zero_slot]]
        if q.dtype not in (np.int8, np.uint8) or q.ndim != 3:
            raise ConversionError(f"{where}: {name} must be a 3-D int8 or uint8 tensor (num_directions, "
                                  f"{'input_size' if name == 'W' else 'hidden_size'}, 4*hidden), found "
                                  f"{q.dtype} {q.shape}")
        D, K, G = q.shape
        if zero.dtype != q.dtype:
            raise ConversionError(f"{where}: {name}_zero_point must have {name}'s type {q.dtype}, found {zero.dtype}")
        if scale.dtype != np.float32:
            raise ConversionError(f"{where}: {name}_scale must be float32, found {scale.dtype}")
        for label, arr in ((f"{name}_scale", scale), (f"{name}_zero_point", zero)):
            if arr.shape not in ((D,), (D, G)):
                raise ConversionError(f"{where}: {label} has shape {arr.shape}; expected ({D},) per tensor or "
                                      f"({D}, {G}) per gate row")
        out.per[name] = "tensor" if scale.shape == (D,) else "row"
        scale = np.broadcast_to(scale.reshape(D, -1), (D, G)).astype(np.float32)  # (D, 4H)
        zero = np.broadcast_to(zero.reshape(D, -1), (D, G)).astype(np.int16)  # (D, 4H)
        if not np.all(np.isfinite(scale) & (scale > 0)):
            bad = scale[~(np.isfinite(scale) & (scale > 0))][0]
            raise ConversionError(f"{where}: {name}_scale holds {float(bad)}; scales must be finite and > 0")
        centred = np.ascontiguousarray((q.astype(np.int16) - zero[:, None, :]).transpose(0, 2, 1))  # (D, 4H, K)
        out.q[name], out.scales[name] = centred, scale
        out.exact[name] = bool(centred.size == 0 or np.abs(centred).max() <= INT8_LIMIT)
        dense = centred.astype(np.float32) * scale[:, :, None]  # (D, 4H, K) float32
        setattr(out, name, dense)
    return out


def unify_weight_types(layers) -> dict:
    """source entries for a chain of converted nodes (onnx_import._NodeWeights); {} without quantized ones.

    A spec has one weight type: a chain mixing LSTM and DynamicQuantizeLSTM nodes (quantize_dynamic with
    nodes_to_exclude) keeps the float32 layers exact and turns the int8 ones into the float32 weights they
    stand for (exact too; the file is then fp32: `convert --weights int8` quantizes it all)."""
    notes = [layer.quantized for layer in layers]
    if not any(notes):
        return {}
    mixed = not all(notes)
    if mixed:
        for layer in layers:
            for ds in layer.directions:
                ds.W, ds.R = as_float32(ds.W), as_float32(ds.R)
    return {"quantized": {"nodes": notes, "weights": "fp32" if mixed else "int8"}}
