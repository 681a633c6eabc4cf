"""Register tiles: FMA chains over one packed slab, as many side by side as the register file holds.

A block is LANES hidden units (or LANES * 4 outputs of a dense layer); its slab is the (K, G) k-major
weights, G = 4 * LANES: row k holds the four vectors [i f g o] that multiply input element k. A tile
broadcasts input values and runs one FMA chain per (input row, vector) over k = 0, 1, ..., K-1, starting
from the caller's vectors.

The summation order is part of the contract (run() and step(), batches and single streams, 1 and 2
threads, the AVX2 and AVX-512 plans must agree bit for bit): a tile runs, for every output element, one
FMA chain over its piece of k (at most config.K_PIECE values) in order, from the starting vectors the
caller gives (zeros: gemm.py adds each piece's sum to the running value once). The tiles differ only in how
many chains run side by side, never in the order inside a chain:

    gemv_1blk   one input row, one block        4 chains (the leftover block)
    gemv_2blk   one input row, two blocks       8 chains: enough in flight to hide FMA latency
    gemm_2row   two input rows, one block       8 chains sharing every weight load     (AVX2 plan)
    gemm_4row   four input rows, one block     16 chains                               (AVX-512 plan)
    gemm_6row   six input rows, one block      24 chains                               (AVX-512 plan)

Register budget per plan (accumulators + weight vectors + one broadcast, checked for spills with
inspect_asm, see docs/performance.md): AVX-512 (32 zmm): 6 rows = 24 + 4 + 1 = 29. AVX2 (16 ymm):
2 rows = 8 + 4 + 1 = 13; a 3-row tile (12 + 4 + 1 = 17) spills, measured 46 vs 96 GFLOP/s on Zen 3.

The GEMV tiles read weights of any stored type (simd.wload: fp32, or int8 / fp16 / bf16 widened in
registers). int8 weights enter the chains unscaled, as float(q): gemm.py applies each row's scale once per
piece (a piece's sum times its scale, added to the running value in one FMA), which keeps the loop at two
instructions per vector of weights (widen, FMA) instead of three. The GEMM tiles read fp32 only: gemm.py
widens a quantized slab piece into an L1 buffer first (amortised over every row of the panel), the same
float(q) values.
"""

from numba import njit

from .config import JIT
from .simd import vfma, vload, vsplat, wload
from .target import LANES

G = 4 * LANES  # floats per slab row: four gate vectors


@njit(**JIT)
def gemv_1blk(w, off, K, v, voff, a0, a1, a2, a3):
    """(a0..a3) + slab @ v[voff : voff+K], slab = w[off : off + K*G] as (K, G) k-major (weights widened to
    float32, int8 unscaled)."""
    for k in range(K):
        row = off + k * G
        x = vsplat(v[voff + k])
        a0 = vfma(wload(w, row), x, a0)
        a1 = vfma(wload(w, row + LANES), x, a1)
        a2 = vfma(wload(w, row + 2 * LANES), x, a2)
        a3 = vfma(wload(w, row + 3 * LANES), x, a3)
    return a0, a1, a2, a3


@njit(**JIT)
def gemv_2blk(w, off, off2, K, v, voff, a0, a1, a2, a3, b0, b1, b2, b3):
    """gemv_1blk for two blocks (slabs at off and off2) and the same input row."""
    for k in range(K):
        x = vsplat(v[voff + k])
        row = off + k * G
        a0 = vfma(wload(w, row), x, a0)
        a1 = vfma(wload(w, row + LANES), x, a1)
        a2 = vfma(wload(w, row + 2 * LANES), x, a2)
        a3 = vfma(wload(w, row + 3 * LANES), x, a3)
        row = off2 + k * G
        b0 = vfma(wload(w, row), x, b0)
        b1 = vfma(wload(w, row + LANES), x, b1)
        b2 = vfma(wload(w, row + 2 * LANES), x, b2)
        b3 = vfma(wload(w, row + 3 * LANES), x, b3)
    return a0, a1, a2, a3, b0, b1, b2, b3


@njit(**JIT)
def gemm_2row(w, off, K, v, o0, o1, acc):
    """gemv_1blk of one block for two input rows v[o0:], v[o1:]; acc is the 8-tuple of starting vectors
    (row r's gates at acc[4r : 4r+4]) and the result has the same layout."""
    a0, a1, a2, a3, b0, b1, b2, b3 = acc
    for k in range(K):
        row = off + k * G
        w0 = vload(w, row)
        w1 = vload(w, row + LANES)
        w2 = vload(w, row + 2 * LANES)
        w3 = vload(w, row + 3 * LANES)
        x = vsplat(v[o0 + k])
        a0, a1, a2, a3 = vfma(w0, x, a0), vfma(w1, x, a1), vfma(w2, x, a2), vfma(w3, x, a3)
        x = vsplat(v[o1 + k])
        b0, b1, b2, b3 = vfma(w0, x, b0), vfma(w1, x, b1), vfma(w2, x, b2), vfma(w3, x, b3)
    return a0, a1, a2, a3, b0, b1, b2, b3


@njit(**JIT)
def gemm_4row(w, off, K, v, o0, o1, o2, o3, acc):
    """gemm_2row for four input rows; acc is the 16-tuple of starting vectors."""
    a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, d0, d1, d2, d3 = acc
    for k in range(K):
        row = off + k * G
        w0 = vload(w, row)
        w1 = vload(w, row + LANES)
        w2 = vload(w, row + 2 * LANES)
        w3 = vload(w, row + 3 * LANES)
        x = vsplat(v[o0 + k])
        a0, a1, a2, a3 = vfma(w0, x, a0), vfma(w1, x, a1), vfma(w2, x, a2), vfma(w3, x, a3)
        x = vsplat(v[o1 + k])
        b0, b1, b2, b3 = vfma(w0, x, b0), vfma(w1, x, b1), vfma(w2, x, b2), vfma(w3, x, b3)
        x = vsplat(v[o2 + k])
        c0, c1, c2, c3 = vfma(w0, x, c0), vfma(w1, x, c1), vfma(w2, x, c2), vfma(w3, x, c3)
        x = vsplat(v[o3 + k])
        d0, d1, d2, d3 = vfma(w0, x, d0), vfma(w1, x, d1), vfma(w2, x, d2), vfma(w3, x, d3)
    return a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, d0, d1, d2, d3


@njit(**JIT)
def gemm_6row(w, off, K, v, o0, o1, o2, o3, o4, o5, acc):
    """gemm_2row for six input rows; acc is the 24-tuple of starting vectors."""
    a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, d0, d1, d2, d3, e0, e1, e2, e3, f0, f1, f2, f3 = acc
    for k in range(K):
        row = off + k * G
        w0 = vload(w, row)
        w1 = vload(w, row + LANES)
        w2 = vload(w, row + 2 * LANES)
        w3 = vload(w, row + 3 * LANES)
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
