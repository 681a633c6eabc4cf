"""One block of BLOCK hidden units: gate accumulation (4-row dot products) and the cell update.

A block's gate vector `acc` (G = 4*BLOCK,) holds [i | f | g | o] pre-activations, BLOCK each.
"""

import numpy as np
from numba import njit

from .activations import activation, sigmoid_fast, tanh_fast
from .config import JIT


@njit(**JIT)
def dot_rows(M, v, acc):
    """acc (G,) += M @ v  for M (G, K) row-major and v (K,), G a multiple of 4.

    Four rows per pass share each load of v; each row's sum over k is a vectorised reduction that
    LLVM keeps in registers (fastmath reassoc). The order of every sum depends only on K, so any two
    callers (run's projection, step) get bit-identical results."""
    G, K = M.shape[0], M.shape[1]
    for r in range(0, G, 4):
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        a2 = np.float32(0.0)
        a3 = np.float32(0.0)
        for k in range(K):
            vk = v[k]
            a0 += M[r, k] * vk
            a1 += M[r + 1, k] * vk
            a2 += M[r + 2, k] * vk
            a3 += M[r + 3, k] * vk
        acc[r] += a0
        acc[r + 1] += a1
        acc[r + 2] += a2
        acc[r + 3] += a3


@njit(**JIT)
def dot_rows2(M, v0, v1, acc0, acc1):
    """acc0 += M @ v0 and acc1 += M @ v1 (M (G, K), G a multiple of 4): the input projection's tile.

    Eight running sums (4 rows x 2 vectors) share each load of M, which makes run()'s projection a
    register-blocked GEMM. step() calls it too, with v1 = v0 and acc1 a throwaway: the same code
    for both modes is what makes them bit-identical (a second kernel would sum in another order)."""
    G, K = M.shape[0], M.shape[1]
    for r in range(0, G, 4):
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        a2 = np.float32(0.0)
        a3 = np.float32(0.0)
        b0 = np.float32(0.0)
        b1 = np.float32(0.0)
        b2 = np.float32(0.0)
        b3 = np.float32(0.0)
        for k in range(K):
            x0 = v0[k]
            x1 = v1[k]
            m0, m1, m2, m3 = M[r, k], M[r + 1, k], M[r + 2, k], M[r + 3, k]
            a0 += m0 * x0
            a1 += m1 * x0
            a2 += m2 * x0
            a3 += m3 * x0
            b0 += m0 * x1
            b1 += m1 * x1
            b2 += m2 * x1
            b3 += m3 * x1
        acc0[r] += a0
        acc0[r + 1] += a1
        acc0[r + 2] += a2
        acc0[r + 3] += a3
        acc1[r] += b0
        acc1[r + 1] += b1
        acc1[r + 2] += b2
        acc1[r + 3] += b3


@njit(**JIT)
def update_fast(acc, block, units, c, hc):
    """Default cell (sigmoid/tanh/tanh) for `units` units: c (units,) updated, hc = o * tanh(c)."""
    for u in range(units):
        i = sigmoid_fast(acc[u])
        f = sigmoid_fast(acc[block + u])
        g = tanh_fast(acc[2 * block + u])
        o = sigmoid_fast(acc[3 * block + u])
        c_new = f * c[u] + i * g
        c[u] = c_new
        hc[u] = o * tanh_fast(c_new)


@njit(**JIT)
def update_general(acc, block, units, c, hc, peep, unit0, has_peep, cellf, codes, input_forget):
    """Any ONNX cell: activations with alpha/beta (cellf[0:3], cellf[3:6]); clip (cellf[6]) on the
    inputs of the f and g activations incl. peephole terms (not h's, as ONNX Runtime); peepholes
    peep (3, H) at units unit0..; input_forget (f = 1 - i). float64 math: the options cost speed,
    not accuracy."""
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
