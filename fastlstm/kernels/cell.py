"""The LSTM cell of one block (LANES hidden units), from its four gate pre-activation vectors.

update_fast is the default cell (sigmoid/tanh/tanh) on vectors, fused into the GEMM epilogue (gemm.py);
update_general is any ONNX cell (other activations with alpha/beta, clip, peepholes, input_forget) in
float64 scalar math, run on gate sums that were stored: the options cost speed, not accuracy.
"""

import numpy as np
from numba import njit

from .activations import activation, sigmoid_fast, tanh_fast
from .config import JIT
from .simd import vfma, vload_n, vmul, vstore, vstore_n
from .target import LANES

G = 4 * LANES


@njit(**JIT)
def update_fast(a_i, a_f, a_g, a_o, c, coff, units, hc, hoff):
    """c[coff : coff+units] updated in place; hc[hoff : hoff+LANES] = o * tanh(c) (lanes past `units` are
    padding, never read as state)."""
    c_prev = vload_n(c, coff, units)
    c_new = vfma(sigmoid_fast(a_f), c_prev, vmul(sigmoid_fast(a_i), tanh_fast(a_g)))
    vstore_n(c, coff, c_new, units)
    vstore(hc, hoff, vmul(sigmoid_fast(a_o), tanh_fast(c_new)))


@njit(**JIT)
def update_general(gates, goff, lanes, units, c, coff, hc, hoff, peep, unit0, cellf, codes, input_forget):
    """One block's units 0..units of the general cell. Gate u of kind k (i f g o) is gates[goff + k*lanes + u];
    c[coff + u] is updated in place, hc[hoff + u] = o * h(c). peep (3, H) or (0, H): p_i, p_f, p_o at unit
    unit0 + u. cellf: alphas (3), betas (3), clip (inf: none); clip applies to the inputs of f and g incl.
    the peephole terms, not to h's input (ONNX Runtime). codes: the f, g, h activation codes."""
    f_code, g_code, h_code = codes
    clip = np.float64(cellf[6])
    af, ag, ah = np.float64(cellf[0]), np.float64(cellf[1]), np.float64(cellf[2])
    bf, bg, bh = np.float64(cellf[3]), np.float64(cellf[4]), np.float64(cellf[5])
    has_peep = peep.shape[0] > 0
    for u in range(units):
        c_prev = np.float64(c[coff + u])
        zi, zf = np.float64(gates[goff + u]), np.float64(gates[goff + lanes + u])
        zg, zo = np.float64(gates[goff + 2 * lanes + u]), np.float64(gates[goff + 3 * lanes + u])
        if has_peep:
            zi += peep[0, unit0 + u] * c_prev
            zf += peep[1, unit0 + u] * c_prev
        i = activation(f_code, min(max(zi, -clip), clip), af, bf)
        if input_forget:  # ONNX Runtime couples the forget gate to the input gate: f = 1 - i
            f = 1.0 - i
        else:
            f = activation(f_code, min(max(zf, -clip), clip), af, bf)
        g = activation(g_code, min(max(zg, -clip), clip), ag, bg)
        c_new = f * c_prev + i * g
        if has_peep:
            zo += peep[2, unit0 + u] * c_new
        o = activation(f_code, min(max(zo, -clip), clip), af, bf)
        c[coff + u] = c_new
        hc[hoff + u] = o * activation(h_code, c_new, ah, bh)  # ONNX Runtime: h's input is not clipped


@njit(**JIT)
def general_rows(wbuf, m, gates, goff, rows, n, c, c_base, hc, hc_base, hc_stride, blk0, blk1):
    """The general cell (update_general) of blocks blk0..blk1 for the n rows rows[j] (int64 pointers), from
    the gate sums stored at gates[goff[j] + blk*G]; c rows of H floats at c_base, hc rows at hc_base."""
    H = m.hidden
    n_peep = 3 * H if m.peephole >= 0 else 0
    start = max(m.peephole, 0)
    peep = wbuf[start : start + n_peep].reshape((n_peep // H, H))
    cellf = wbuf[m.cell : m.cell + 7]
    codes = (m.f_code, m.g_code, m.h_code)
    for j in range(n):
        r = rows[j]
        for blk in range(blk0, blk1):
            unit0 = blk * LANES
            update_general(gates, goff[j] + blk * G, LANES, min(LANES, H - unit0), c, c_base + r * H + unit0, hc,
                           hc_base + r * hc_stride + unit0, peep, unit0, cellf, codes, m.input_forget != 0)
