"""How the order of the gate sums moves fastlstm's float32 error (issue 16): an emulation of run().

    python tools/sum_order.py          # table: distance to float64 for each summation order

The emulation computes every gate pre-activation with LANES-wide FMAs over k, as the kernels do, then runs
the kernels' own cell (kernels/cell.py update_fast, so the activations are bit for bit the engine's).
Orders (piece = how many k one chain covers before its sum is added to the running value):
    chain        one FMA chain per gate starting from the bias (projection) or from the projected
                 value (recurrence): what the kernels did before K_PIECE
    zero-start   each chain starts from 0 and the start value is added once at its end
    zero-start, piece P   the same per piece of P values of k; P = config.K_PIECE = 128 is what the
                 kernels do (checked: equal to Engine.run bit for bit)
The distance is max |y - y64| over the outputs, y64 the same nn.LSTM run in float64 by PyTorch.
Default-cell, unprojected, batch-1 models only (the cases of tests/test_accuracy.py).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from fastlstm.kernels.cell import update_fast
from fastlstm.kernels.simd import LANES as BLOCK  # the kernels' vector width
from fastlstm.kernels.simd import fptr, vadd, vfma, vload, vsplat, vstore


@njit(inline="always")
def _sum_block(mt, ncols, off, v, K, start, zero_start, piece):
    """start + sum_k mt[k, off:off+LANES] * v[k] for one gate vector (mt (K, ncols) k-major)."""
    if not zero_start:
        acc = start
        for k in range(K):
            acc = vfma(vload(mt, k * ncols + off), vsplat(v[k]), acc)
        return acc
    acc = start
    for k0 in range(0, K, piece):
        part = vsplat(0.0)
        for k in range(k0, min(K, k0 + piece)):
            part = vfma(vload(mt, k * ncols + off), vsplat(v[k]), part)
        acc = vadd(acc, part)
    return acc


@njit(cache=False)
def _run_direction(wt, rt, bias, x, reverse, zero_start, piece, H):
    """One layer-direction over x (T, I): wt (I, 4Hp), rt (Hp, 4Hp) k-major with gate g of unit u at column
    g*Hp + u, bias (4Hp,). Returns y (T, H)."""
    T, I = x.shape
    Hp = rt.shape[0]
    ncols = 4 * Hp
    h = np.zeros(Hp, np.float32)
    c = np.zeros(Hp, np.float32)
    hc = np.zeros(Hp, np.float32)
    xw = np.zeros(ncols, np.float32)
    y = np.zeros((T, H), np.float32)
    wp, rp, bp, xwp, cp, hcp = fptr(wt), fptr(rt), fptr(bias), fptr(xw), fptr(c), fptr(hc)
    for s in range(T):
        t = T - 1 - s if reverse else s
        xt = x[t]
        for col in range(0, ncols, BLOCK):  # input projection, every gate vector
            vstore(xwp, col, _sum_block(wp, ncols, col, xt, I, vload(bp, col), zero_start, piece))
        for blk in range(Hp // BLOCK):  # recurrence and cell, block by block (reads h of step t-1)
            u0 = blk * BLOCK
            a_i = _sum_block(rp, ncols, u0, h, H, vload(xwp, u0), zero_start, piece)
            a_f = _sum_block(rp, ncols, Hp + u0, h, H, vload(xwp, Hp + u0), zero_start, piece)
            a_g = _sum_block(rp, ncols, 2 * Hp + u0, h, H, vload(xwp, 2 * Hp + u0), zero_start, piece)
            a_o = _sum_block(rp, ncols, 3 * Hp + u0, h, H, vload(xwp, 3 * Hp + u0), zero_start, piece)
            update_fast(a_i, a_f, a_g, a_o, cp, u0, min(BLOCK, H - u0), hcp, u0)
        h[:] = hc
        y[t] = hc[:H]
    return y


def _k_major(m: np.ndarray, H: int, Hp: int, rows: int) -> np.ndarray:
    """(4H, K) canonical gates -> (rows, 4Hp) k-major, gate g of unit u at column g*Hp + u."""
    out = np.zeros((rows, 4 * Hp), np.float32)
    for g in range(4):
        out[: m.shape[1], g * Hp: g * Hp + H] = m[g * H: (g + 1) * H].T
    return out


def emulate(spec, x: np.ndarray, zero_start: bool = False, piece: int = 1 << 30) -> np.ndarray:
    """y (T, D*H) of spec on x (T, I) with the given summation order (see the module docstring)."""
    H = spec.hidden_size
    Hp = -(-H // BLOCK) * BLOCK
    inp = np.ascontiguousarray(x, np.float32)
    for layer in spec.layers:
        outs = []
        for d, ds in enumerate(layer):
            wt = _k_major(np.asarray(ds.W, np.float32), H, Hp, inp.shape[1])
            rt = _k_major(np.asarray(ds.R, np.float32), H, Hp, Hp)
            bias = _k_major(np.asarray(ds.b, np.float32)[:, None], H, Hp, 1)[0]
            outs.append(_run_direction(wt, rt, bias, inp, d == 1, zero_start, piece, H))
        inp = np.ascontiguousarray(np.concatenate(outs, axis=1))
    return inp


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_accuracy import _model_and_input, float64_torch_and_ours

    orders = [("chain", False, 1 << 30), ("zero-start", True, 1 << 30), ("zero-start, piece 128", True, 128)]
    print(f"{'case':14s} {'torch':>9s} {'engine':>9s} " + " ".join(f"{name:>23s}" for name, _, _ in orders))
    for H in (25, 100, 512):
        for kind in ("onehot", "normal"):
            lstm, x = _model_and_input(H, kind)
            y64, y_torch, spec, y_engine = float64_torch_and_ours(lstm, x)
            row = [f"H={H:<4d} {kind:7s}"]
            for y in (y_torch, y_engine):
                row.append(f"{np.abs(y - y64).max():9.2e}")
            for name, zero_start, piece in orders:
                y = emulate(spec, x, zero_start, piece)
                same = " (=engine)" if name == "chain" and np.array_equal(y, y_engine) else ""
                row.append(f"{np.abs(y - y64).max():13.2e}{same:10s}")
            print(" ".join(row), flush=True)
