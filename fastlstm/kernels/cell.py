"""One block of BLOCK = 16 hidden units: its packed gate products and its cell update, on F32x16 vectors.

A block's gate pre-activations are four vectors (a_i, a_f, a_g, a_o), one per gate, 16 units each.
A slab is a block's (K, G) k-major weights (G = 64 = 4 gates x 16 units): row k is the four gate
vectors that multiply input element k (see pack.py). Arrays arrive as float32 pointers plus flat
offsets (simd.fptr; why: simd.py).

The summation order is part of the contract (run() and step() must agree bit for bit): for every gate
element, the sum over k runs in two chains, even k into the accumulator (which starts from the caller's
value: the bias, or the input projection) and odd k into a chain from zero, and the two are added at
the end. gemv_slab (one input vector) and gemv_slab2 (two, sharing every weight load) follow the same
order, so a row's result never depends on which kernel or tile produced it. Two chains per vector
also keep 8 independent FMAs in flight (one chain per vector stalls on FMA latency).
"""

import numpy as np
from numba import njit

from .activations import activation, sigmoid_fast, tanh_fast
from .config import JIT
from .pack import G
from .simd import vadd, vfma, vload, vload_n, vmul, vsplat, vstore, vstore_n


@njit(inline="always")
def gemv_slab(w, off, K, v, voff, a0, a1, a2, a3):
    """(a0..a3) + slab @ v[voff : voff+K]: slab = w[off : off + K*G] as (K, G) k-major."""
    zero = vsplat(0.0)
    p0, p1, p2, p3 = zero, zero, zero, zero
    for k in range(0, K - 1, 2):
        row = off + k * G
        x0 = vsplat(v[voff + k])
        x1 = vsplat(v[voff + k + 1])
        a0 = vfma(vload(w, row), x0, a0)
        a1 = vfma(vload(w, row + 16), x0, a1)
        a2 = vfma(vload(w, row + 32), x0, a2)
        a3 = vfma(vload(w, row + 48), x0, a3)
        p0 = vfma(vload(w, row + G), x1, p0)
        p1 = vfma(vload(w, row + G + 16), x1, p1)
        p2 = vfma(vload(w, row + G + 32), x1, p2)
        p3 = vfma(vload(w, row + G + 48), x1, p3)
    if K % 2:
        row = off + (K - 1) * G
        x0 = vsplat(v[voff + K - 1])
        a0 = vfma(vload(w, row), x0, a0)
        a1 = vfma(vload(w, row + 16), x0, a1)
        a2 = vfma(vload(w, row + 32), x0, a2)
        a3 = vfma(vload(w, row + 48), x0, a3)
    return vadd(a0, p0), vadd(a1, p1), vadd(a2, p2), vadd(a3, p3)


@njit(inline="always")
def gemv_slab2(w, off, K, v, voff, uoff, a0, a1, a2, a3, b0, b1, b2, b3):
    """gemv_slab for two input vectors v[voff:] (into a) and v[uoff:] (into b), one weight load each."""
    zero = vsplat(0.0)
    p0, p1, p2, p3 = zero, zero, zero, zero
    q0, q1, q2, q3 = zero, zero, zero, zero
    for k in range(0, K - 1, 2):
        row = off + k * G
        x0 = vsplat(v[voff + k])
        x1 = vsplat(v[voff + k + 1])
        y0 = vsplat(v[uoff + k])
        y1 = vsplat(v[uoff + k + 1])
        w0 = vload(w, row)
        w1 = vload(w, row + 16)
        w2 = vload(w, row + 32)
        w3 = vload(w, row + 48)
        a0, a1, a2, a3 = vfma(w0, x0, a0), vfma(w1, x0, a1), vfma(w2, x0, a2), vfma(w3, x0, a3)
        b0, b1, b2, b3 = vfma(w0, y0, b0), vfma(w1, y0, b1), vfma(w2, y0, b2), vfma(w3, y0, b3)
        w0 = vload(w, row + G)
        w1 = vload(w, row + G + 16)
        w2 = vload(w, row + G + 32)
        w3 = vload(w, row + G + 48)
        p0, p1, p2, p3 = vfma(w0, x1, p0), vfma(w1, x1, p1), vfma(w2, x1, p2), vfma(w3, x1, p3)
        q0, q1, q2, q3 = vfma(w0, y1, q0), vfma(w1, y1, q1), vfma(w2, y1, q2), vfma(w3, y1, q3)
    if K % 2:
        row = off + (K - 1) * G
        x0 = vsplat(v[voff + K - 1])
        y0 = vsplat(v[uoff + K - 1])
        w0 = vload(w, row)
        w1 = vload(w, row + 16)
        w2 = vload(w, row + 32)
        w3 = vload(w, row + 48)
        a0, a1, a2, a3 = vfma(w0, x0, a0), vfma(w1, x0, a1), vfma(w2, x0, a2), vfma(w3, x0, a3)
        b0, b1, b2, b3 = vfma(w0, y0, b0), vfma(w1, y0, b1), vfma(w2, y0, b2), vfma(w3, y0, b3)
    return (vadd(a0, p0), vadd(a1, p1), vadd(a2, p2), vadd(a3, p3),
            vadd(b0, q0), vadd(b1, q1), vadd(b2, q2), vadd(b3, q3))


@njit(inline="always")
def load_gates(buf, off):
    """The four gate vectors stored at buf[off : off + G]."""
    return vload(buf, off), vload(buf, off + 16), vload(buf, off + 32), vload(buf, off + 48)


@njit(inline="always")
def store_gates(buf, off, a0, a1, a2, a3):
    vstore(buf, off, a0)
    vstore(buf, off + 16, a1)
    vstore(buf, off + 32, a2)
    vstore(buf, off + 48, a3)


@njit(inline="always")
def update_fast(a_i, a_f, a_g, a_o, c, coff, units, hc, hoff):
    """Default cell (sigmoid/tanh/tanh) for one block: c[coff : coff+units] updated in place,
    hc[hoff : hoff+16] = o * tanh(c) (lanes past `units` are padding, never read as state)."""
    c_prev = vload_n(c, coff, units)
    c_new = vfma(sigmoid_fast(a_f), c_prev, vmul(sigmoid_fast(a_i), tanh_fast(a_g)))
    vstore_n(c, coff, c_new, units)
    vstore(hc, hoff, vmul(sigmoid_fast(a_o), tanh_fast(c_new)))


@njit(**JIT)
def update_general(acc, block, units, c, hc, peep, unit0, has_peep, cellf, codes, input_forget):
    """Any ONNX cell: activations with alpha/beta (cellf[0:3], cellf[3:6]); clip (cellf[6]) on the
    inputs of the f and g activations incl. peephole terms (not h's, as ONNX Runtime); peepholes
    peep (3, H) at units unit0..; input_forget (f = 1 - i). float64 math: the options cost speed,
    not accuracy. acc (G,) gate pre-activations, c (units,), hc (units,)."""
    f_code, g_code, h_code = codes[0], codes[1], codes[2]
    clip = np.float64(cellf[6])
    af, ag, ah = np.float64(cellf[0]), np.float64(cellf[1]), np.float64(cellf[2])
    bf, bg, bh = np.float64(cellf[3]), np.float64(cellf[4]), np.float64(cellf[5])
    for u in range(units):
        c_prev = np.float64(c[u])
        zi, zf = np.float64(acc[u]), np.float64(acc[block + u])
        zg, zo = np.float64(acc[2 * block + u]), np.float64(acc[3 * block + u])
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
        c[u] = c_new
        hc[u] = o * activation(h_code, c_new, ah, bh)  # ONNX Runtime: h's input is not clipped
