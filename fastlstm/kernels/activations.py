"""Activations: 16-lane float32 tanh/sigmoid for the fused path, the exact ONNX set for the rest.

tanh_fast is an odd rational approximation x*P(x^2)/Q(x^2) fitted here (iterated weighted least
squares on [0, 9]); measured max abs error 3.4e-7 in float32 over the whole line, Q > 0 everywhere.
It is written on F32x16 vectors (simd.py): mul/fma/div and clamps only, so it runs at vector speed
(np.tanh does not vectorise here: no SVML).
"""

import math

import numpy as np
from numba import njit

from .simd import vclamp, vdiv, vfma, vmul, vsplat

TANH_CLAMP = np.float32(9.0)  # |x| >= 9: tanh(x) == +-1 to within 3e-8
_P0, _P1, _P2 = np.float32(9.99999860e-01), np.float32(1.29170239e-01), np.float32(2.91847778e-03)
_P3, _P4, _P5 = np.float32(9.24811192e-06), np.float32(-1.27281991e-08), np.float32(1.81358500e-11)
_Q1, _Q2, _Q3 = np.float32(4.62502939e-01), np.float32(2.37535945e-02), np.float32(2.27795011e-04)
_ONE, _HALF = np.float32(1.0), np.float32(0.5)

# ONNX activation codes, in the order of fastlstm.spec.ACTIVATIONS.
ACTIVATION_CODES = {
    "Sigmoid": 0, "Tanh": 1, "Relu": 2, "Affine": 3, "LeakyRelu": 4, "ThresholdedRelu": 5,
    "ScaledTanh": 6, "HardSigmoid": 7, "Elu": 8, "Softsign": 9, "Softplus": 10,
}


@njit(inline="always")
def tanh_fast(x):
    """tanh of 16 lanes (F32x16). Clamped at +-9 first (P/Q is fitted on [0, 9]); NaN lanes pass the
    clamps and come out NaN, +-inf come out +-1. One fixed sequence of IEEE operations (no fast-math
    flags), so every kernel computes bit-identical activations."""
    x = vclamp(x, vsplat(-TANH_CLAMP), vsplat(TANH_CLAMP))
    z = vmul(x, x)
    p = vfma(vsplat(_P5), z, vsplat(_P4))
    p = vfma(p, z, vsplat(_P3))
    p = vfma(p, z, vsplat(_P2))
    p = vfma(p, z, vsplat(_P1))
    p = vfma(p, z, vsplat(_P0))
    q = vfma(vsplat(_Q3), z, vsplat(_Q2))
    q = vfma(q, z, vsplat(_Q1))
    q = vfma(q, z, vsplat(_ONE))
    return vclamp(vdiv(vmul(x, p), q), vsplat(-_ONE), vsplat(_ONE))


@njit(inline="always")
def sigmoid_fast(x):
    """sigmoid of 16 lanes: 0.5 + 0.5 tanh(x / 2)."""
    half = vsplat(_HALF)
    return vfma(half, tanh_fast(vmul(half, x)), half)


@njit(inline="always")
def activation(code, x, alpha, beta):
    """The ONNX activation `code` at x (float64 math, exact). alpha/beta already hold defaults."""
    if code == 0:
        if x >= 0.0:
            return 1.0 / (1.0 + math.exp(-x))
        e = math.exp(x)
        return e / (1.0 + e)
    if code == 1:
        return math.tanh(x)
    if code == 2:
        return max(x, 0.0)
    if code == 3:
        return alpha * x + beta
    if code == 4:
        return x if x >= 0.0 else alpha * x
    if code == 5:
        return x if x > alpha else 0.0
    if code == 6:
        return alpha * math.tanh(beta * x)
    if code == 7:
        return min(max(alpha * x + beta, 0.0), 1.0)
    if code == 8:
        return x if x >= 0.0 else alpha * (math.exp(x) - 1.0)
    if code == 9:
        return x / (1.0 + abs(x))
    # code 10, Softplus: log(1 + e^x) without overflow
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))
