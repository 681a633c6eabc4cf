"""One block of BLOCK = 16 hidden units: its packed gate products and its cell update, on F32x16 vectors.

A block's gate pre-activations are four vectors (a_i, a_f, a_g, a_o), one per gate, 16 units each.
A slab is a block's (K, G) k-major weights (G = 64 = 4 gates x 16 units): row k is the four gate
vectors that multiply input element k (see pack.py). Arrays arrive as float32 pointers plus flat
offsets (simd.fptr; why: simd.py).

The summation order is part of the contract (run() and step() must agree bit for bit): every gate
element is one FMA chain over k = 0, 1, ..., K-1, starting from the caller's value (the bias, or the
input projection). The tiles below differ only in how many chains they run side by side, never in
the order inside a chain, so a result does not depend on which tile produced it:
    gemv_1     one input row, one block        4 chains (leftovers)
    gemv_2blk  one input row, two blocks       8 chains: enough in flight to hide FMA latency
    gemm_4row  four input rows, one block     16 chains sharing every weight load (GEMM speed)
    gemm_6row  six input rows, one block      24 chains: 29 of the 32 vector registers, the most
                                              FMAs per weight load without spilling
"""

import numpy as np
from numba import njit

from .activations import activation, sigmoid_fast, tanh_fast
from .config import JIT
from .pack import G
from .simd import vfma, vload, vload_n, vmul, vsplat, vstore, vstore_n


@njit(inline="always")
def gemv_1(w, off, K, v, voff, a0, a1, a2, a3):
    """(a0..a3) + slab @ v[voff : voff+K]: slab = w[off : off + K*G] as (K, G) k-major."""
    for k in range(K):
        row = off + k * G
        x = vsplat(v[voff + k])
        a0 = vfma(vload(w, row), x, a0)
        a1 = vfma(vload(w, row + 16), x, a1)
        a2 = vfma(vload(w, row + 32), x, a2)
        a3 = vfma(vload(w, row + 48), x, a3)
    return a0, a1, a2, a3


@njit(inline="always")
def gemv_2blk(w, off, off2, K, v, voff, a0, a1, a2, a3, b0, b1, b2, b3):
    """gemv_1 for two blocks (slabs at off and off2) and the same input row."""
    for k in range(K):
        x = vsplat(v[voff + k])
        row = off + k * G
        a0 = vfma(vload(w, row), x, a0)
        a1 = vfma(vload(w, row + 16), x, a1)
        a2 = vfma(vload(w, row + 32), x, a2)
        a3 = vfma(vload(w, row + 48), x, a3)
        row = off2 + k * G
        b0 = vfma(vload(w, row), x, b0)
        b1 = vfma(vload(w, row + 16), x, b1)
        b2 = vfma(vload(w, row + 32), x, b2)
        b3 = vfma(vload(w, row + 48), x, b3)
    return a0, a1, a2, a3, b0, b1, b2, b3


@njit(inline="always")
def gemm_4row(w, off, K, v, o0, o1, o2, o3, acc):
    """gemv_1 of one block for four input rows v[o0:], v[o1:], v[o2:], v[o3:]; acc is the 16-tuple of
    starting vectors (row-major: row r's gates are acc[4r : 4r+4]) and the result has the same layout."""
    a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, d0, d1, d2, d3 = acc
    for k in range(K):
        row = off + k * G
        w0 = vload(w, row)
        w1 = vload(w, row + 16)
        w2 = vload(w, row + 32)
        w3 = vload(w, row + 48)
        x = vsplat(v[o0 + k])
        a0, a1, a2, a3 = vfma(w0, x, a0), vfma(w1, x, a1), vfma(w2, x, a2), vfma(w3, x, a3)
        x = vsplat(v[o1 + k])
        b0, b1, b2, b3 = vfma(w0, x, b0), vfma(w1, x, b1), vfma(w2, x, b2), vfma(w3, x, b3)
        x = vsplat(v[o2 + k])
        c0, c1, c2, c3 = vfma(w0, x, c0), vfma(w1, x, c1), vfma(w2, x, c2), vfma(w3, x, c3)
        x = vsplat(v[o3 + k])
        d0, d1, d2, d3 = vfma(w0, x, d0), vfma(w1, x, d1), vfma(w2, x, d2), vfma(w3, x, d3)
    return a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, d0, d1, d2, d3


@njit(inline="always")
def gemm_6row(w, off, K, v, o0, o1, o2, o3, o4, o5, acc):
    """gemm_4row for six input rows; acc is the 24-tuple of starting vectors, row r's gates at acc[4r : 4r+4]."""
    a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, d0, d1, d2, d3, e0, e1, e2, e3, f0, f1, f2, f3 = acc
    for k in range(K):
        row = off + k * G
        w0 = vload(w, row)
        w1 = vload(w, row + 16)
        w2 = vload(w, row + 32)
        w3 = vload(w, row + 48)
        x = vsplat(v[o0 + k])
        a0, a1, a2, a3 = vfma(w0, x, a0), vfma(w1, x, a1), vfma(w2, x, a2), vfma(w3, x, a3)
        x = vsplat(v[o1 + k])
        b0, b1, b2, b3 = vfma(w0, x, b0), vfma(w1, x, b1), vfma(w2, x, b2), vfma(w3, x, b3)
        x = vsplat(v[o2 + k])
        c0, c1, c2, c3 = vfma(w0, x, c0), vfma(w1, x, c1), vfma(w2, x, c2), vfma(w3, x, c3)
        x = vsplat(v[o3 + k])
        d0, d1, d2, d3 = vfma(w0, x, d0), vfma(w1, x, d1), vfma(w2, x, d2), vfma(w3, x, d3)
        x = vsplat(v[o4 + k])
        e0, e1, e2, e3 = vfma(w0, x, e0), vfma(w1, x, e1), vfma(w2, x, e2), vfma(w3, x, e3)
        x = vsplat(v[o5 + k])
        f0, f1, f2, f3 = vfma(w0, x, f0), vfma(w1, x, f1), vfma(w2, x, f2), vfma(w3, x, f3)
    return a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, d0, d1, d2, d3, e0, e1, e2, e3, f0, f1, f2, f3


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


@njit(**JIT)
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
