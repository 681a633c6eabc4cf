"""Activations: 16-lane float32 tanh/sigmoid for the fused path, the exact ONNX set for the rest.

tanh_fast and sigmoid_fast are written on FVec vectors (simd.py, LANES wide): FMAs, one division, selects on
ordered compares and an integer shift, so they run at vector speed (np.tanh does not vectorise here:
no SVML), one fixed sequence of operations for every kernel. Max abs error over every float32
(exhaustive, `python tools/fit_activations.py --check`): tanh 7.66e-8, sigmoid 7.13e-8 (the float32
spacing just below 1 is 5.96e-8); results within [-1, 1] / [0, 1], NaN lanes give NaN, +-inf give
exactly +-1 / 0 and 1, tanh(-0) = -0.

  e^y, y in [-88, 0] (_exp_scaled): n = round(y log2 e) by the 1.5 * 2^23 trick, t = y - n ln2 with
      ln2 rounded to float32 (that FMA is exact; the 1.9e-9 missing from ln2 moves e^y by n * 1.9e-9
      relative, below 2e-9 absolute in either activation), e^t = 1 + t + t^2 R(t) with R of degree
      4 (relative error 3.8e-9 on |t| <= ln2/2; Estrin's split, 4 FMAs deep instead of 6), times 2^n
      (n shifted into the exponent bits) inside the last FMA.
  tanh, |x| < 0.7:  |x| + |x|^3 P(x^2), P of degree 4 (relative error 2.2e-8); the sum is the last
      FMA, so the result is within about half an ulp.
        |x| >= 0.7: 1 - 2e / (1 + e), e = e^(-2|x|): 2e / (1 + e) <= 0.4 carries the relative errors
      of the exp, the denominator and the division, the subtraction from 1 adds half an ulp. Below
      0.7 that subtraction would cancel (and lose the relative accuracy near 0), hence two branches;
      both are computed and a select picks one. The sign bit of x is OR-ed in last.
  sigmoid: e = e^(-|x|) in [0, 1] (never overflows), q = e / (1 + e) = sigmoid(-|x|); q for x < 0,
      1 - q for x >= 0. Not through tanh, and not 1 / (1 + e) for x >= 0: that rounds 1 + e, up to
      1.5 ulp just below 1 (PyTorch's formula), where 1 - q stays within 1.2 ulp.
The exp argument is clamped at -20 (tanh: from there 1 - 2e/(1 + e) rounds to 1) and at -88
(sigmoid: from |x| = 87.68 on n = -127 and 2^n reads as +0.0, so sigmoid(-inf) is exactly 0; for
|x| in (87.34, 87.68) e is subnormal: right, but slow on x86).
Coefficients: minimax fits rounded to float32 by tools/fit_activations.py (its docstring: method).
Cost (AVX2, 16 lanes = two 8-lane halves): see docs/performance.md "Activations".
"""

import math

import numpy as np
from numba import njit

from .simd import vabs, vadd, vcopysign, vdiv, vfma, vmax, vmul, vorsign, vpow2_low_bits, vselect_lt, vsplat, vsub

_ONE, _HALF, _ZERO = np.float32(1.0), np.float32(0.5), np.float32(0.0)
# e^y = 2^n e^t: n = round(y log2 e) lands in the low mantissa bits of y log2 e + 1.5 * 2^23 + bias,
# read back as 2^(n + bias - 127); bias 128 returns 2 e^y.
_LOG2E = np.float32(1.442695)
_LN2 = np.float32(0.6931472)  # float32(ln 2) = ln 2 + 1.9e-9: see the module docstring
_MAGIC_1 = np.float32(1.5 * 2**23 + 127)
_MAGIC_2 = np.float32(1.5 * 2**23 + 128)
_R0, _R1, _R2 = np.float32(4.999999404e-01), np.float32(1.666652113e-01), np.float32(4.166838899e-02)
_R3, _R4 = np.float32(8.368714713e-03), np.float32(1.381456386e-03)
# tanh(x) = x + x^3 P(x^2) on |x| < TANH_SMALL
TANH_SMALL = np.float32(0.7)
_P0, _P1, _P2 = np.float32(-3.333319128e-01), np.float32(1.332911104e-01), np.float32(-5.355884135e-02)
_P3, _P4 = np.float32(2.009190992e-02), np.float32(-5.138605367e-03)
TANH_EXP_MIN = np.float32(-20.0)  # e^-20 = 2e-9: 1 - 2e/(1+e) rounds to 1 from here on
SIGMOID_EXP_MIN = np.float32(-88.0)  # n = -127: 2^n reads as +0.0, sigmoid saturates to exactly 0

# ONNX activation codes, in the order of fastlstm.spec.ACTIVATIONS.
ACTIVATION_CODES = {
    "Sigmoid": 0, "Tanh": 1, "Relu": 2, "Affine": 3, "LeakyRelu": 4, "ThresholdedRelu": 5,
    "ScaledTanh": 6, "HardSigmoid": 7, "Elu": 8, "Softsign": 9, "Softplus": 10,
}


@njit(inline="always")
def _exp_scaled(y, magic):
    """e^y * 2^(bias - 127) per lane for y in [-88, 0] (magic = 1.5 * 2^23 + bias); NaN lanes give NaN."""
    k = vfma(y, vsplat(_LOG2E), magic)  # 1.5 * 2^23 + bias + n, n = round(y log2 e), exactly
    t = vfma(vsub(k, magic), vsplat(-_LN2), y)  # y - n ln2, exact (n ln2 is exact inside the FMA)
    t2 = vmul(t, t)
    r = vfma(vfma(vsplat(_R4), t2, vfma(vsplat(_R3), t, vsplat(_R2))), t2, vfma(vsplat(_R1), t, vsplat(_R0)))  # R(t)
    scale = vpow2_low_bits(k)
    return vfma(vfma(r, t2, t), scale, scale)  # (1 + t + t^2 R(t)) 2^n, one rounding


@njit(inline="always")
def exp_nonpositive(y):
    """e^y per lane for y <= 0 (softmax's x - max, kernels/layers.py): _exp_scaled with the argument clamped
    at -88 (e^y then reads as +0.0 from y = -87.68 on, below float32's normal range); NaN lanes give NaN."""
    return _exp_scaled(vmax(y, vsplat(SIGMOID_EXP_MIN)), vsplat(_MAGIC_1))


@njit(inline="always")
def tanh_fast(x):
    """tanh of one vector (FVec, LANES lanes): see the module docstring for the method and the error."""
    one = vsplat(_ONE)
    a = vabs(x)
    two_e = _exp_scaled(vmax(vmul(a, vsplat(-2.0)), vsplat(TANH_EXP_MIN)), vsplat(_MAGIC_2))  # 2 e^(-2|x|)
    large = vsub(one, vdiv(two_e, vfma(two_e, vsplat(_HALF), one)))  # tanh|x| = 1 - 2e / (1 + e)
    z = vmul(a, a)
    p = vfma(vsplat(_P4), z, vsplat(_P3))
    p = vfma(p, z, vsplat(_P2))
    p = vfma(p, z, vsplat(_P1))
    p = vfma(p, z, vsplat(_P0))
    small = vfma(vmul(a, z), p, a)  # >= +0, as large is
    return vorsign(vselect_lt(a, vsplat(TANH_SMALL), small, large), x)


@njit(inline="always")
def sigmoid_fast(x):
    """sigmoid of 16 lanes: q = e / (1 + e) with e = e^(-|x|), q for x < 0 and 1 - q for x >= 0."""
    one = vsplat(_ONE)
    e = _exp_scaled(vmax(vcopysign(x, vsplat(-_ONE)), vsplat(SIGMOID_EXP_MIN)), vsplat(_MAGIC_1))
    q = vdiv(e, vadd(e, one))  # sigmoid(-|x|)
    return vselect_lt(x, vsplat(_ZERO), q, vsub(one, q))


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
