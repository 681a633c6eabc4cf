"""Kernels of the layers around the LSTM (fastlstm.layers): embedding gather, Linear on the plan's GEMM/GEMV
tiles (gemm.gates_add), elementwise activations, float32 softmax / log-softmax, LayerNorm. Packing:
fastlstm/plan_layers.py; the whole-model step and run() stages that call these: kernels/model.py.

The layer table (a plan word, layout.W_LAYER_TABLE, gives its offset in wbuf): one row of COLUMNS int64
words per layer, the layers before the LSTM first, then the head, read through an int64 pointer (field):
    C_KIND    K_EMBEDDING | K_LINEAR | K_ACTIVATION | K_LAYER_NORM
    C_IN      input width (the vocabulary V for an embedding)
    C_OUT     output width
    C_W       offset in wbuf (floats): embedding table (V, E) | Linear slabs (blocks, in, G) | LayerNorm weight
    C_B       Linear bias (blocks * G,), zeros when the layer has none | LayerNorm bias (n,)
    C_ACT     activation code A_* (Linear, Activation)
    C_BLOCKS  Linear: output blocks of G = 4 * LANES outputs
    C_EPS     LayerNorm: offset of eps (one float32)
    C_PANEL   Linear: rows per panel of the GEMM's cache blocking (tuning.panel_rows)

A Linear is a dense product as the LSTM's projection is (plan.dense_slabs; gemm.gates_add with the store
epilogue): its rows go through the same register tiles, cache blocking and summation pieces (each output a
chain of config.K_PIECE-long FMA chains from 0, added to the bias in order), so a row's bits do not depend
on the tile, the batch or run() against step(). The tiles store whole blocks of G outputs: a Linear writes
into a work buffer of `wide` floats per row, and the activation (or a copy) moves the row's `out` values to
where the next stage reads them.

Reductions (softmax sums, LayerNorm moments) add 16 values side by side whatever LANES is (two vectors
on AVX2, one on AVX-512) and then the 16 lanes in order: one summation order on every plan. The max and
the elementwise functions are exact or per element, so they need no such care.
"""

import math
from collections import namedtuple

import numpy as np
from numba import njit

from .activations import exp_nonpositive, sigmoid_fast, tanh_fast
from .config import JIT
from .gemm import Tiling, inputs, no_cell, product, sums_at, weights
from .sequence import copy_floats
from .simd import vadd, vfma, vload, vload_n, vmax, vmul, vsplat, vstore, vstore_n, vsub
from .target import LANES
from .vmath import vfirst, vhmax, vreduce_add

(C_KIND, C_IN, C_OUT, C_W, C_B, C_ACT, C_BLOCKS, C_EPS, C_PANEL) = range(9)
COLUMNS = 9
K_EMBEDDING, K_LINEAR, K_ACTIVATION, K_LAYER_NORM = 0, 1, 2, 3
A_NONE, A_RELU, A_TANH, A_SIGMOID, A_SOFTMAX, A_LOG_SOFTMAX = range(6)
ACTIVATION_CODES = {"none": A_NONE, "relu": A_RELU, "tanh": A_TANH, "sigmoid": A_SIGMOID,
                    "softmax": A_SOFTMAX, "log_softmax": A_LOG_SOFTMAX}
PARTS = 16 // LANES  # vectors per group of 16 values in a reduction (2 on AVX2, 1 on AVX-512)
_INF = np.float32(np.inf)

# Rows: row j of a stage's input or output at v[base + j * stride] (v a float32 pointer).
Rows = namedtuple("Rows", "v base stride")
# Work: the n rows' scratch: work buffer h (0 or 1) at buf[base + h * half ...], rows of `wide` floats; rows
# (n,) int64 = 0..n-1 (gates_add's input row numbers) and offs (n,) int64 (its output offsets), pointers.
Work = namedtuple("Work", "buf base half wide rows offs")


@njit(inline="always")
def rows_at(v, base, stride):
    return Rows(v, np.int64(base), np.int64(stride))


@njit(inline="always")
def field(table, layer, column):
    """A word of the layer table (an int64 pointer to its first row)."""
    return table[layer * COLUMNS + column]


@njit(inline="always")
def store_lanes(dst, off, v, n):
    """dst[off : off + min(n, LANES)] = the first lanes of v (nothing for n <= 0)."""
    if n >= LANES:
        vstore(dst, off, v)
    else:
        vstore_n(dst, off, v, n)


@njit(inline="always")
def load_lanes(src, off, n):
    """src[off : off + min(n, LANES)], zeros in the lanes past n (reads nothing for n <= 0)."""
    if n >= LANES:
        return vload(src, off)
    return vload_n(src, off, n)


# ---------------------------------------------------------------------------------------- row functions


@njit(inline="always")
def elementwise(code, v):
    """ReLU (NaN stays NaN, as in PyTorch), tanh, sigmoid (activations.py, within 1e-7) or none."""
    if code == A_RELU:
        return vmax(v, vsplat(np.float32(0.0)))
    if code == A_TANH:
        return tanh_fast(v)
    if code == A_SIGMOID:
        return sigmoid_fast(v)
    return v


@njit(**JIT)
def softmax_row(src, so, dst, do, n, log):
    """dst[do : do+n] = softmax (or log-softmax) of src[so : so+n] in float32, stable: the row's max is
    subtracted before the exponential; log-softmax is (x - max) - log(sum). src may be dst."""
    full = n - n % LANES
    m = vsplat(-_INF)
    for j in range(0, full, LANES):
        m = vmax(vload(src, so + j), m)
    top = vhmax(m)
    for j in range(full, n):
        top = max(top, src[so + j])
    shift = vsplat(top)
    a0, a1 = vsplat(np.float32(0.0)), vsplat(np.float32(0.0))
    for j in range(0, n, 16):  # the sum of the exponentials in groups of 16 (module docstring)
        e = vfirst(exp_nonpositive(vsub(load_lanes(src, so + j, n - j), shift)), n - j)
        if not log:
            store_lanes(dst, do + j, e, n - j)
        a0 = vadd(a0, e)
        if PARTS == 2:
            k = j + LANES
            e = vfirst(exp_nonpositive(vsub(load_lanes(src, so + k, n - k), shift)), n - k)
            if not log:
                store_lanes(dst, do + k, e, n - k)
            a1 = vadd(a1, e)
    total = vreduce_add(np.float32(-0.0), a0)
    if PARTS == 2:
        total = vreduce_add(total, a1)
    if log:
        log_total = vsplat(np.float32(math.log(np.float64(total))))
        for j in range(0, n, LANES):
            store_lanes(dst, do + j, vsub(vsub(load_lanes(src, so + j, n - j), shift), log_total), n - j)
    else:
        inverse = vsplat(np.float32(1.0 / np.float64(total)))
        for j in range(0, n, LANES):
            store_lanes(dst, do + j, vmul(load_lanes(dst, do + j, n - j), inverse), n - j)


@njit(**JIT)
def row_moments(src, so, n):
    """(mean, biased variance) of src[so : so+n] in float32: the sum, then the sum of squared deviations
    from the mean, each in groups of 16 (module docstring)."""
    a0, a1 = vsplat(np.float32(0.0)), vsplat(np.float32(0.0))
    for j in range(0, n, 16):
        a0 = vadd(a0, load_lanes(src, so + j, n - j))
        if PARTS == 2:
            a1 = vadd(a1, load_lanes(src, so + j + LANES, n - j - LANES))
    total = vreduce_add(np.float32(-0.0), a0)
    if PARTS == 2:
        total = vreduce_add(total, a1)
    mean = np.float32(total / np.float32(n))
    centre = vsplat(mean)
    a0, a1 = vsplat(np.float32(0.0)), vsplat(np.float32(0.0))
    for j in range(0, n, 16):
        d = vfirst(vsub(load_lanes(src, so + j, n - j), centre), n - j)
        a0 = vfma(d, d, a0)
        if PARTS == 2:
            k = j + LANES
            d = vfirst(vsub(load_lanes(src, so + k, n - k), centre), n - k)
            a1 = vfma(d, d, a1)
    squares = vreduce_add(np.float32(-0.0), a0)
    if PARTS == 2:
        squares = vreduce_add(squares, a1)
    return mean, np.float32(squares / np.float32(n))


@njit(**JIT)
def layer_norm_row(w, g_of, b_of, eps, src, so, dst, do, n):
    """dst[do : do+n] = (x - mean) / sqrt(var + eps) * g + b of x = src[so : so+n] (biased variance, as ONNX
    and PyTorch); g, b at w[g_of:], w[b_of:]. src may be dst."""
    mean, var = row_moments(src, so, n)
    centre = vsplat(mean)
    scale = vsplat(np.float32(1.0 / math.sqrt(np.float64(var) + eps)))
    for j in range(0, n, LANES):
        d = vmul(vsub(load_lanes(src, so + j, n - j), centre), scale)
        store_lanes(dst, do + j, vfma(d, load_lanes(w, g_of + j, n - j), load_lanes(w, b_of + j, n - j)), n - j)


# ------------------------------------------------------------------------------------------------ layers


@njit(**JIT)
def activate(code, src, dst, n, width):
    """dst rows = act(src rows) for n rows of `width` values (A_NONE: a copy); src may be dst."""
    for r in range(n):
        so, do = src.base + r * src.stride, dst.base + r * dst.stride
        if code >= A_SOFTMAX:
            softmax_row(src.v, so, dst.v, do, width, code == A_LOG_SOFTMAX)
        elif code == A_NONE:
            copy_floats(src.v, so, dst.v, do, width)
        else:
            for j in range(0, width, LANES):
                store_lanes(dst.v, do + j, elementwise(code, load_lanes(src.v, so + j, width - j)), width - j)


@njit(**JIT)
def layer_norm(w, table, i, src, dst, n):
    g_of, b_of, width = field(table, i, C_W), field(table, i, C_B), field(table, i, C_OUT)
    eps = np.float64(w[field(table, i, C_EPS)])
    for r in range(n):
        layer_norm_row(w, g_of, b_of, eps, src.v, src.base + r * src.stride, dst.v, dst.base + r * dst.stride, width)


@njit(**JIT)
def linear(w, table, i, src, n, into, work):
    """into rows (whole blocks of G: `wide` floats each) = bias + src rows @ weight.T, on the GEMM tiles."""
    for j in range(n):
        work.offs[j] = into.base + j * into.stride
    linear_blocks(w, table, i, src, n, into, work.rows, work.offs, np.int64(0), field(table, i, C_BLOCKS))


@njit(**JIT)
def linear_blocks(w, table, i, src, n, into, rows, offs, b0, b1):
    """Output blocks b0..b1-1 of linear() (a team's part of it): rows (n,) = 0..n-1 and offs (n,) = each row's
    offset in into.v, int64 pointers. Every output is the same FMA chain whatever the blocks' split."""
    product(weights(w, field(table, i, C_W), field(table, i, C_IN), w, -1), inputs(src.v, src.base, src.stride, rows),
            n, sums_at(into.v, offs, field(table, i, C_B), w), b0, b1, False, no_cell(into.v),
            Tiling(field(table, i, C_PANEL)))


@njit(**JIT)
def run_layers(w, table, first, last, src, src_buffer, n, dst, work):
    """Layers first..last-1 of the table on n rows: src rows -> dst rows (`out` floats each). The layers
    in between write to the work buffers, never to the one they read (src_buffer: the buffer src is in, 0
    or 1, or -1 when src is elsewhere)."""
    cur, held = src, src_buffer
    for i in range(first, last):
        kind, width, code = field(table, i, C_KIND), field(table, i, C_OUT), field(table, i, C_ACT)
        final = i == last - 1
        other = 1 if held == 0 else 0
        into = rows_at(work.buf, work.base + other * work.half, work.wide)
        if kind == K_LINEAR:
            linear(w, table, i, cur, n, into, work)
            if final:
                activate(code, into, dst, n, width)
            elif code != A_NONE:
                activate(code, into, into, n, width)
        elif kind == K_ACTIVATION:
            activate(code, cur, dst if final else into, n, width)
        else:  # K_LAYER_NORM (an embedding is only ever first: gather_rows)
            layer_norm(w, table, i, cur, dst if final else into, n)
        cur, held = into, other


@njit(**JIT)
def gather_rows(w, table, ids, i0, n, dst):
    """dst rows = the embedding rows of ids[i0 .. i0+n-1] (table row 0; every id in [0, V), checked by the
    caller)."""
    E, at = field(table, 0, C_OUT), field(table, 0, C_W)
    for j in range(n):
        copy_floats(w, at + ids[i0 + j] * E, dst.v, dst.base + j * dst.stride, E)


@njit(inline="always")
def first_bad_id(ids, n, vocab):
    """The index of the first of ids[0..n-1] outside [0, vocab), or -1."""
    for j in range(n):
        if ids[j] < 0 or ids[j] >= vocab:
            return j
    return -1
