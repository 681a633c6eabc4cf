"""Weight matrices stored below float32: what a quantized W or R *is* (spec level, no arithmetic policy).

A model has one weight type for all its W and R matrices (`ModelSpec.weights`):

    'fp32'  W, R are float32 arrays (the default)
    'fp16'  QuantizedMatrix data float16 (rows, cols)                         w = float32(data)
    'bf16'  QuantizedMatrix data uint16 (rows, cols): the upper 16 bits of    w = float32 with bits data << 16
            the float32 (rounded to nearest even from float32)
    'int8'  QuantizedMatrix data int8 (rows, cols) in [-127, 127],            w = float32(q) * scale[row]
            scale float32 (rows,), finite and > 0: symmetric, one scale per gate row

Rows are canonical gate rows (4H of them, gates i, f, g, o), columns the inputs (I for W, Hout for R).
The bias, peepholes and projection stay float32: they are a few bytes next to W and R (4H, 3H and
Hout*H floats against 4H*(I+Hout)), and the projection's error would add to h directly, unfiltered
by a gate. How the quantized values are chosen is fastlstm.quantize; what they mean is fixed here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import SpecError

WEIGHT_TYPES = ("fp32", "fp16", "bf16", "int8")
QUANTIZED_DTYPES = {"fp16": np.dtype(np.float16), "bf16": np.dtype(np.uint16), "int8": np.dtype(np.int8)}
INT8_LIMIT = 127  # symmetric: q in [-127, 127], so -w is representable whenever w is


@dataclass(frozen=True, eq=False)
class QuantizedMatrix:
    """A (rows, cols) weight matrix below float32; see the module docstring for each kind's meaning.

    kind:  'fp16' | 'bf16' | 'int8'
    data:  (rows, cols) float16 | uint16 (bf16 bit patterns) | int8, C-contiguous
    scale: (rows,) float32 for 'int8' (one per gate row), None otherwise
    """

    kind: str
    data: np.ndarray
    scale: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.data.shape

    @property
    def size(self) -> int:
        """Number of weights (as ndarray.size)."""
        return self.data.size

    @property
    def nbytes(self) -> int:
        """Bytes stored: the data plus the int8 scales."""
        return self.data.nbytes + (0 if self.scale is None else self.scale.nbytes)

    def dequantize(self) -> np.ndarray:
        """(rows, cols) float32: the weights this matrix stands for (exactly, for fp16 and bf16; for int8
        each weight is the float32 product float32(q) * scale[row])."""
        if self.kind == "fp16":
            return self.data.astype(np.float32)
        if self.kind == "bf16":
            return (self.data.astype(np.uint32) << 16).view(np.float32)
        if self.kind == "int8":
            return self.data.astype(np.float32) * self.scale[:, None]
        raise SpecError(f"unknown weight type {self.kind!r}; expected one of {', '.join(QUANTIZED_DTYPES)}")

    def checked(self, shape: tuple[int, int], what: str) -> QuantizedMatrix:
        """This matrix with contiguous arrays after checking kind, dtype, shape and (int8) scales and
        the [-127, 127] range; SpecError naming `what` otherwise. Values are never cast silently: a
        float64 'fp16' matrix or an int16 'int8' one is an error, not a rounding."""
        if self.kind not in QUANTIZED_DTYPES:
            raise SpecError(f"{what}: unknown weight type {self.kind!r}; expected one of "
                            f"{', '.join(QUANTIZED_DTYPES)}")
        data = self.data
        dtype = QUANTIZED_DTYPES[self.kind]
        if not isinstance(data, np.ndarray) or data.dtype != dtype:
            found = data.dtype if isinstance(data, np.ndarray) else type(data).__name__
            raise SpecError(f"{what}: {self.kind} weights must be stored as {dtype}, found {found}")
        if data.shape != shape:
            raise SpecError(f"{what}: expected shape {shape}, found {data.shape}")
        data = np.ascontiguousarray(data)
        scale = self.scale
        if self.kind != "int8":
            if scale is not None:
                raise SpecError(f"{what}: {self.kind} weights take no scale")
            return QuantizedMatrix(self.kind, data)
        if not isinstance(scale, np.ndarray) or scale.shape != (shape[0],):
            found = scale.shape if isinstance(scale, np.ndarray) else type(scale).__name__
            raise SpecError(f"{what}: int8 weights need one scale per row, shape ({shape[0]},), found {found}")
        if scale.dtype != np.float32:
            raise SpecError(f"{what}: int8 scales must be float32, found {scale.dtype}")
        bad = ~(np.isfinite(scale) & (scale > 0))
        if bad.any():
            row = int(np.argmax(bad))
            raise SpecError(f"{what}: int8 scale of row {row} is {float(scale[row])}; scales must be finite and > 0")
        if data.size and int(data.min()) < -INT8_LIMIT:  # -128: not symmetric, not what we write
            row = int(np.argmin(data.min(axis=1)))
            raise SpecError(f"{what}: int8 weight -128 in row {row}; symmetric int8 uses [-127, 127]")
        return QuantizedMatrix("int8", data, np.ascontiguousarray(scale))

    def __repr__(self) -> str:
        return f"QuantizedMatrix({self.kind}, shape={self.shape})"


def weight_type(matrix) -> str:
    """'fp32' for an array, the kind of a QuantizedMatrix."""
    return matrix.kind if isinstance(matrix, QuantizedMatrix) else "fp32"


def as_float32(matrix) -> np.ndarray:
    """A W or R as float32: dequantized if quantized, unchanged otherwise."""
    return matrix.dequantize() if isinstance(matrix, QuantizedMatrix) else matrix
