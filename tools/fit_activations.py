"""Fit the float32 coefficients of fastlstm/kernels/activations.py and measure the result.

    python tools/fit_activations.py            # print the coefficients (paste into activations.py)
    python tools/fit_activations.py --check    # every float32 through tanh_fast / sigmoid_fast (~3 min)

Method: minimax relative error by Lawson's algorithm (iteratively reweighted least squares) on a dense
grid, targets in long double (x87 80-bit: 64-bit mantissa), then the coefficients are rounded to
float32 one at a time from the highest degree down, refitting the lower ones after each rounding so
the lower terms absorb the rounding of the higher ones.

  tanh, small branch:  tanh(x) = x + x^3 * P(x^2) on |x| < TANH_SMALL, P of degree 5 in x^2.
  exp core:            e^t = 1 + t + t^2 R(t) on |t| <= ln2/2, R of degree 4 (e^t to degree 6).
"""

from __future__ import annotations

import numpy as np

LD = np.longdouble


def lawson(basis, target, weight, iters=300):
    """Coefficients c minimising max |weight * (basis @ c - target)| (Lawson's IRLS)."""
    n = basis.shape[0]
    lw = np.full(n, 1.0 / n)
    best, best_err = None, np.inf
    for _ in range(iters):
        sw = np.sqrt(lw) * weight
        c, *_ = np.linalg.lstsq(basis * sw[:, None], target * sw, rcond=None)
        err = np.abs(weight * (basis @ c - target))
        if err.max() < best_err:
            best, best_err = c, err.max()
        lw = lw * err
        lw /= lw.sum()
    return best, best_err


def fit_rounded(powers, target, weight, fixed=None):
    """Fit coefficients of sum c_k * powers[:, k], then round them to float32 from the last (highest
    degree) down, refitting the still-free ones after each rounding. Returns float32 coefficients."""
    ncoef = powers.shape[1]
    coefs = np.zeros(ncoef)
    done = np.zeros(ncoef, bool)
    for k in range(ncoef - 1, -1, -1):
        free = ~done
        resid = target - powers[:, done] @ coefs[done]
        c, _ = lawson(powers[:, free], resid, weight)
        coefs[free] = c
        coefs[k] = np.float32(coefs[k])
        done[k] = True
    return coefs.astype(np.float32)


def fit_tanh_small(limit, degree):
    """P (degree `degree` in z = x^2) with tanh(x) ~ x + x^3 P(x^2), relative error on (0, limit]."""
    x = np.linspace(LD(1e-4), LD(limit), 6000)
    t = np.tanh(x)
    z = (x * x).astype(np.float64)
    target = ((t - x) / x**3).astype(np.float64)  # long double: no cancellation trouble at 1e-4
    weight = (x**3 / t).astype(np.float64)  # relative error of the whole tanh
    powers = z[:, None] ** np.arange(degree + 1)
    return fit_rounded(powers, target, weight)


def fit_exp(degree, half_width=0.3466):
    """R (degree `degree` - 2) with e^t ~ 1 + t + t^2 R(t) on |t| <= half_width, relative error.
    1 and t are exact in float32, so only the t^2.. coefficients carry rounding; half_width is
    ln2/2 = 0.34657 plus the slack of rounding y*log2(e) with a float32 log2(e)."""
    t = np.linspace(-LD(half_width), LD(half_width), 6001)
    t = t[t != 0]
    e = np.exp(t)
    target = ((e - 1 - t) / t**2).astype(np.float64)
    weight = (t**2 / e).astype(np.float64)
    powers = t.astype(np.float64)[:, None] ** np.arange(degree - 1)
    return fit_rounded(powers, target, weight)


def _f32_fma(a, b, c):
    """float32 fma: the float64 product of two float32 values is exact; one rounding (plus the float64
    rounding of the sum, which can double-round only in rare ties; fine for fitting)."""
    return np.float32(a.astype(np.float64) * b + c)


def check_exhaustive(which, sign, chunk_bits=22):
    """Run fastlstm's tanh_fast (which=0) or sigmoid_fast (1) on every float32 of one sign (NaN
    patterns included), compiled with the kernels' own JIT flags, against float64 math.
    Returns (max abs error, the x where it occurs, mean signed error, count of contract violations:
    a result outside [-1, 1] / [0, 1], a NaN from a number or a number from a NaN)."""
    import math

    from numba import njit

    from fastlstm.kernels.activations import sigmoid_fast, tanh_fast
    from fastlstm.kernels.config import FASTMATH
    from fastlstm.kernels.simd import fptr, vload, vstore

    @njit(fastmath=FASTMATH)
    def run(which, sign, chunk_bits):
        size = 1 << chunk_bits
        bits = np.empty(size, np.uint32)
        xs = bits.view(np.float32)
        out = np.empty(size, np.float32)
        worst, worst_x, total, count, bad = 0.0, np.float32(0.0), 0.0, 0, 0
        lo = 0.0 if which == 1 else -1.0
        for start in range(0, 1 << 31, size):
            for i in range(size):
                bits[i] = np.uint32(start + i) | np.uint32(sign << 31)
            src, dst = fptr(xs), fptr(out)
            for i in range(0, size, 16):
                vstore(dst, i, tanh_fast(vload(src, i)) if which == 0 else sigmoid_fast(vload(src, i)))
            for i in range(size):
                x, y = np.float64(xs[i]), np.float64(out[i])
                if x != x or y != y:
                    bad += (x != x) != (y != y)
                    continue
                if y < lo or y > 1.0:
                    bad += 1
                if which == 0:
                    ref = math.tanh(x)
                elif x >= 0.0:
                    ref = 1.0 / (1.0 + math.exp(-x))
                else:
                    ref = math.exp(x) / (1.0 + math.exp(x))
                err = y - ref
                total += err
                count += 1
                if abs(err) > worst:
                    worst, worst_x = abs(err), xs[i]
        return worst, worst_x, total / count, bad

    return run(which, sign, chunk_bits)


def _print_fits(small, pdeg, edeg):
    p = fit_tanh_small(small, pdeg)
    q = fit_exp(edeg)
    print("tanh small P (z^0..):", ", ".join(f"{v:.9e}" for v in p))
    print("exp R (t^0..):", ", ".join(f"{v:.9e}" for v in q))
    # math error of the rounded coefficients, in long double
    x = np.linspace(LD(1e-6), LD(small), 200001)
    z = x * x
    approx = x + x**3 * sum(LD(c) * z**k for k, c in enumerate(p))
    rel, err = np.max(np.abs(approx / np.tanh(x) - 1)), np.max(np.abs(approx - np.tanh(x)))
    print(f"tanh small branch: max rel err {rel:.3e}, max abs err {err:.3e}")
    t = np.linspace(-LD(0.3466), LD(0.3466), 200001)
    approx = 1 + t + t**2 * sum(LD(c) * t**k for k, c in enumerate(q))
    print(f"exp core: max rel err {np.max(np.abs(approx / np.exp(t) - 1)):.3e} (2^-24 = {2.0**-24:.3e})")


if __name__ == "__main__":
    import argparse
    import time

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=float, default=0.7, help="tanh switch point (TANH_SMALL)")
    ap.add_argument("--pdeg", type=int, default=4, help="degree of P in x^2")
    ap.add_argument("--edeg", type=int, default=6, help="degree of the exp polynomial")
    ap.add_argument("--check", action="store_true",
                    help="instead: run activations.py's tanh_fast/sigmoid_fast on every float32 (minutes)")
    args = ap.parse_args()
    if not args.check:
        _print_fits(args.small, args.pdeg, args.edeg)
    else:
        for which, name in ((0, "tanh"), (1, "sigmoid")):
            for sign in (0, 1):
                t0 = time.time()
                worst, at, mean, bad = check_exhaustive(which, sign)
                print(f"{name} {'-+'[sign == 0]}: max abs err {worst:.3e} at x = {at!r}, mean err {mean:.2e}, "
                      f"contract violations {bad} ({time.time() - t0:.0f} s)", flush=True)
