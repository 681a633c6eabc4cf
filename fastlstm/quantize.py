"""Quantize a float32 model's W and R to fp16, bf16 or int8 (fastlstm.quantized says what each means).

    fp16  round to nearest even (numpy's cast); weights beyond fp16's range (|w| > 65504) are refused,
          never turned into inf. Relative error <= 2^-11 (absolute <= 2^-25 below 2^-14, subnormals).
    bf16  the float32's upper 16 bits, rounded to nearest even; relative error <= 2^-8.
    int8  symmetric, one scale per gate row: scale = max|row| / 127, q = round(w / scale) in
          [-127, 127]; |w - q*scale| <= scale / 2 = max|row| / 254. An all-zero row gets scale 1.0,
          a row whose scale would underflow float32 the smallest normal float32 (never 0 or NaN).

Non-finite weights are refused for every type (an int8 scale cannot be made from them). The bias,
peepholes and projection stay float32 (see fastlstm.quantized). docs/quantization.md has the error bounds.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .errors import ConversionError
from .quantized import INT8_LIMIT, WEIGHT_TYPES, QuantizedMatrix, as_float32, weight_type
from .spec import ModelSpec

FP16_MAX = float(np.finfo(np.float16).max)  # 65504
_FLOAT32_TINY = np.float32(np.finfo(np.float32).tiny)  # smallest normal float32


def quantize(spec: ModelSpec, weights: str) -> ModelSpec:
    """A new spec with W and R of every layer-direction stored as `weights` ('fp32', 'fp16', 'bf16', 'int8').

    The spec passed in is not modified. A spec already of that type is returned as it is. A quantized
    spec is not quantized again to another type (the error would compound, and fp32 cannot bring back
    what was rounded away): ConversionError, quantize the float32 source instead. `verify` results of
    the source do not carry over (they measured other weights)."""
    check_weights_name(weights)
    spec.validate()
    current = spec.weights
    if current == weights:
        return spec
    if current != "fp32":
        raise ConversionError(f"the model's weights are already {current}; quantizing them again to {weights} "
                              f"would compound the rounding: quantize the fp32 source instead")
    layers = []
    for l, layer in enumerate(spec.layers):
        new_layer = []
        for d, ds in enumerate(layer):
            where = f"layer {l} direction {d}"
            new_layer.append(dataclasses.replace(ds, W=quantize_matrix(ds.W, weights, f"{where} W"),
                                                 R=quantize_matrix(ds.R, weights, f"{where} R")))
        layers.append(new_layer)
    return dataclasses.replace(spec, layers=layers, source=dict(spec.source), verify={}).validate()


def dequantize(spec: ModelSpec) -> ModelSpec:
    """A float32 spec holding the weights a quantized spec stands for (an fp32 spec is returned as is)."""
    spec.validate()
    if spec.weights == "fp32":
        return spec
    layers = [[dataclasses.replace(ds, W=as_float32(ds.W), R=as_float32(ds.R)) for ds in layer]
              for layer in spec.layers]
    return dataclasses.replace(spec, layers=layers, source=dict(spec.source), verify={}).validate()


def check_weights_name(weights) -> str:
    if weights not in WEIGHT_TYPES:
        raise ConversionError(f"unknown weight type {weights!r}; expected one of {', '.join(WEIGHT_TYPES)}")
    return weights


def quantize_matrix(w, kind: str, where: str = "weights"):
    """(rows, cols) float weights -> QuantizedMatrix of `kind` (float32 array for 'fp32')."""
    check_weights_name(kind)
    if weight_type(w) != "fp32":
        raise ConversionError(f"{where}: already {weight_type(w)}; quantize the fp32 weights")
    w = np.ascontiguousarray(w, dtype=np.float32)
    bad = ~np.isfinite(w)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ConversionError(f"{where}: weight [{row}, {col}] is {float(w[row, col])}; only finite weights can be "
                              f"quantized")
    if kind == "fp32":
        return w
    if kind == "fp16":
        return QuantizedMatrix("fp16", to_fp16(w, where))
    if kind == "bf16":
        return QuantizedMatrix("bf16", to_bf16_bits(w, where))
    q, scale = to_int8_rows(w)
    return QuantizedMatrix("int8", q, scale)


def to_fp16(w: np.ndarray, where: str) -> np.ndarray:
    """float32 -> float16 (nearest even); ConversionError for a weight beyond fp16's range."""
    big = np.abs(w) > FP16_MAX
    if big.any():
        with np.errstate(over="ignore"):
            over = np.isinf(w.astype(np.float16)) & big  # 65504 < |w| < 65520 still rounds to 65504
        if over.any():
            row, col = np.argwhere(over)[0]
            raise ConversionError(f"{where}: weight [{row}, {col}] = {float(w[row, col]):.7g} is beyond fp16's "
                                  f"range (|w| <= {FP16_MAX:g}); use bf16 or int8 for this model")
    return w.astype(np.float16)


def to_bf16_bits(w: np.ndarray, where: str) -> np.ndarray:
    """float32 -> bf16 bit patterns (uint16): round to nearest even on the 16 dropped bits."""
    bits = w.view(np.uint32).astype(np.uint64)  # room for the carry
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    inf = (rounded & 0x7FFF) == 0x7F80  # a finite weight rounded up past bf16's largest
    if inf.any():
        row, col = np.argwhere(inf)[0]
        raise ConversionError(f"{where}: weight [{row}, {col}] = {float(w[row, col]):.7g} rounds beyond bf16's "
                              f"range")
    return rounded


def to_int8_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 (rows, cols), finite -> (q int8 (rows, cols), scale float32 (rows,)), symmetric per row."""
    peak = np.abs(w).max(axis=1) if w.shape[1] else np.zeros(w.shape[0], np.float32)  # (rows,)
    scale = (peak.astype(np.float64) / INT8_LIMIT).astype(np.float32)
    scale = np.where(peak == 0, np.float32(1.0), np.maximum(scale, _FLOAT32_TINY)).astype(np.float32)
    # round against the stored float32 scale, in float64: q*scale is then the nearest representable weight
    q = np.rint(w.astype(np.float64) / scale.astype(np.float64)[:, None])
    return np.clip(q, -INT8_LIMIT, INT8_LIMIT).astype(np.int8), scale
