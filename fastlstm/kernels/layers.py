"""Kernels of the layers around the LSTM (fastlstm.layers): embedding gather, dense GEMV/GEMM over rows,
activations, float32 softmax / log-softmax, LayerNorm, select-last. Packing: fastlstm/stages.py.

Everything a layer stack needs crosses the numba dispatcher as one float32 buffer and one int64 table:
    lbuf   (N,) float32          every packed layer array (read-only)
    table  (n_layers, TABLE_COLUMNS) int64, one row per layer, columns T_*:
             T_KIND   K_EMBEDDING | K_LINEAR | K_ACTIVATION | K_LAYER_NORM
             T_IN     input width (the vocabulary V for an embedding)
             T_OUT    output width
             T_W      offset in lbuf: embedding table (V, E) | Linear slabs (nblk, in, LB) | LayerNorm weight
             T_B      offset of the Linear bias (nblk*LB,) zero-padded, -1 for none | LayerNorm bias
             T_ACT    activation code A_* (Linear, Activation)
             T_NBLK   Linear: output blocks of LB = 16 outputs
             T_EPS    LayerNorm: offset of eps (one float)
A Linear's weight (out, in) is packed as k-major slabs, one per block of LB outputs: slab blk, row k =
weight[blk*LB : blk*LB+LB, k] (zero rows pad the last block), so a block's accumulators are one F32x16
and every weight is read once, in order, per pass.

Entry points (the layer stack in one call; no Python objects inside):
    rows_forward(lbuf, table, x (N, F0), out (N, C), scratch) -> bool
        every layer of `table` applied to each row of x: the head after the LSTM (x = h of the last
        layer, or y of every step) and float layers before it
    tokens_forward(lbuf, table, ids (N,) int64, out (N, C), scratch) -> int64
        table[0] is the embedding: -1 when done, else the index of the first id outside [0, V) (nothing
        written)
    layers_scratch_floats(table, n_rows) -> the scratch both need for n_rows rows
rows_forward returns False, touching nothing, when the shapes do not fit the table (the engine never
passes such shapes; the check makes a wrong call an error, not an out-of-bounds write).

Summation order (run() and step() agree bit for bit): every Linear output is one FMA chain over k = 0..in-1
starting from its bias (or 0), whichever tile computes it; softmax sums, LayerNorm moments and their
reductions run in one fixed order per row. Rows go through the stack ROW_CHUNK at a time (two ping-pong
buffers in the scratch), so a GEMM over T*B rows needs no (T*B, width) temporaries.
"""

import math

import numpy as np
from numba import njit

from .activations import sigmoid_fast, tanh_fast
from .config import JIT
from .simd import fptr, vclamp, vfma, vload, vload_n, vmul, vsplat, vstore, vstore_n
from .vmath import padd, vadd, vexp, vfirst, vhmax, vmax, vsub, vsum

LB = 16  # outputs per Linear block: one F32x16
(T_KIND, T_IN, T_OUT, T_W, T_B, T_ACT, T_NBLK, T_EPS) = range(8)
TABLE_COLUMNS = 8
K_EMBEDDING, K_LINEAR, K_ACTIVATION, K_LAYER_NORM = 0, 1, 2, 3
A_NONE, A_RELU, A_TANH, A_SIGMOID, A_SOFTMAX, A_LOG_SOFTMAX = range(6)
ACTIVATION_CODES = {"none": A_NONE, "relu": A_RELU, "tanh": A_TANH, "sigmoid": A_SIGMOID,
                    "softmax": A_SOFTMAX, "log_softmax": A_LOG_SOFTMAX}
ROW_CHUNK = 64  # rows per pass through the stack: 64 rows reuse each weight 64 times, scratch stays small
_INF = np.float32(np.inf)


# ---------------------------------------------------------------------------------------------- vectors


@njit(inline="always")
def elementwise(code, v):
    """The elementwise activations of 16 lanes (ReLU keeps NaN, as PyTorch does)."""
    if code == A_RELU:
        return vclamp(v, vsplat(np.float32(0.0)), vsplat(_INF))
    if code == A_TANH:
        return tanh_fast(v)
    if code == A_SIGMOID:
        return sigmoid_fast(v)
    return v


@njit(inline="always")
def store_lanes(dst, off, v, n):
    """dst[off : off + min(n, 16)] = the first lanes of v."""
    if n >= LB:
        vstore(dst, off, v)
    else:
        vstore_n(dst, off, v, n)


@njit(inline="always")
def load_lanes(src, off, n):
    """src[off : off + min(n, 16)], zeros in the lanes past n."""
    if n >= LB:
        return vload(src, off)
    return vload_n(src, off, n)


# ----------------------------------------------------------------------------------------------- Linear


@njit(inline="always")
def block_bias(w, bias_of, blk):
    if bias_of >= 0:
        return vload(w, bias_of + blk * LB)
    return vsplat(np.float32(0.0))


@njit(inline="always")
def linear_row(w, slab_of, bias_of, K, nblk, width, x, xoff, dst, doff):
    """One row: dst[doff : doff+width] = W @ x[xoff : xoff+K] + b, four blocks (4 FMA chains of 16 lanes,
    8 on 8-lane CPUs: enough to hide the FMA latency) per pass over x."""
    S = K * LB  # floats per slab
    blk = 0
    while blk + 4 <= nblk:
        s0 = slab_of + blk * S
        a0, a1 = block_bias(w, bias_of, blk), block_bias(w, bias_of, blk + 1)
        a2, a3 = block_bias(w, bias_of, blk + 2), block_bias(w, bias_of, blk + 3)
        for k in range(K):
            xv = vsplat(x[xoff + k])
            row = s0 + k * LB
            a0 = vfma(vload(w, row), xv, a0)
            a1 = vfma(vload(w, row + S), xv, a1)
            a2 = vfma(vload(w, row + 2 * S), xv, a2)
            a3 = vfma(vload(w, row + 3 * S), xv, a3)
        o = blk * LB
        vstore(dst, doff + o, a0)
        vstore(dst, doff + o + LB, a1)
        vstore(dst, doff + o + 2 * LB, a2)
        store_lanes(dst, doff + o + 3 * LB, a3, width - o - 3 * LB)
        blk += 4
    while blk < nblk:
        s0 = slab_of + blk * S
        a0 = block_bias(w, bias_of, blk)
        for k in range(K):
            a0 = vfma(vload(w, s0 + k * LB), vsplat(x[xoff + k]), a0)
        store_lanes(dst, doff + blk * LB, a0, width - blk * LB)
        blk += 1


@njit(inline="always")
def linear_4rows(w, slab_of, bias_of, K, nblk, width, x, x0, xs, dst, d0, ds):
    """Four rows (x rows at x0 + j*xs, dst rows at d0 + j*ds) block by block: every weight load feeds four
    FMA chains (GEMM speed for run(); the same chains as linear_row, so the same bits)."""
    S = K * LB
    x1, x2, x3 = x0 + xs, x0 + 2 * xs, x0 + 3 * xs
    for blk in range(nblk):
        s0 = slab_of + blk * S
        a0 = block_bias(w, bias_of, blk)
        a1, a2, a3 = a0, a0, a0
        for k in range(K):
            wv = vload(w, s0 + k * LB)
            a0 = vfma(wv, vsplat(x[x0 + k]), a0)
            a1 = vfma(wv, vsplat(x[x1 + k]), a1)
            a2 = vfma(wv, vsplat(x[x2 + k]), a2)
            a3 = vfma(wv, vsplat(x[x3 + k]), a3)
        o, n = blk * LB, width - blk * LB
        store_lanes(dst, d0 + o, a0, n)
        store_lanes(dst, d0 + ds + o, a1, n)
        store_lanes(dst, d0 + 2 * ds + o, a2, n)
        store_lanes(dst, d0 + 3 * ds + o, a3, n)


@njit(**JIT)
def linear_rows(w, slab_of, bias_of, K, nblk, width, x, xs, dst, ds, n):
    """n rows of a Linear layer without its activation: x rows of stride xs -> dst rows of stride ds."""
    n4 = n - n % 4
    for r in range(0, n4, 4):
        linear_4rows(w, slab_of, bias_of, K, nblk, width, x, r * xs, xs, dst, r * ds, ds)
    for r in range(n4, n):
        linear_row(w, slab_of, bias_of, K, nblk, width, x, r * xs, dst, r * ds)


# -------------------------------------------------------------------------------- row-wise normalisers


@njit(inline="always")
def softmax_row(src, soff, dst, doff, n, log):
    """dst[doff : doff+n] = softmax (or log-softmax) of src[soff : soff+n], float32 and stable: the max
    is subtracted before exp; log-softmax is (x - max) - log(sum). src may be dst."""
    full = n - n % LB
    m = vsplat(-_INF)
    for j in range(0, full, LB):
        m = vmax(m, vload(src, soff + j))
    top = vhmax(m)
    for j in range(full, n):
        top = max(top, src[soff + j])
    shift = vsplat(top)
    total = vsplat(np.float32(0.0))
    for j in range(0, n, LB):
        e = vfirst(vexp(vsub(load_lanes(src, soff + j, n - j), shift)), n - j)
        if not log:
            store_lanes(dst, doff + j, e, n - j)
        total = vadd(total, e)
    s = vsum(total)
    if log:
        log_s = vsplat(np.float32(math.log(s)))
        for j in range(0, n, LB):
            store_lanes(dst, doff + j, vsub(vsub(load_lanes(src, soff + j, n - j), shift), log_s), n - j)
    else:
        inv = vsplat(np.float32(1.0 / s))
        for j in range(0, n, LB):
            store_lanes(dst, doff + j, vmul(load_lanes(dst, doff + j, n - j), inv), n - j)


@njit(**JIT)
def activation_rows(code, src, ss, dst, ds, n, width):
    """dst rows = act(src rows) for n rows of `width` values (src may be dst)."""
    for r in range(n):
        if code >= A_SOFTMAX:
            softmax_row(src, r * ss, dst, r * ds, width, code == A_LOG_SOFTMAX)
        else:
            for j in range(0, width, LB):
                v = elementwise(code, load_lanes(src, r * ss + j, width - j))
                store_lanes(dst, r * ds + j, v, width - j)


@njit(**JIT)
def layer_norm_rows(w, g_of, b_of, eps, src, ss, dst, ds, n, width):
    """dst = (src - mean) / sqrt(var + eps) * g + b per row of `width` values (biased variance, as ONNX and
    PyTorch); g, b at w[g_of:], w[b_of:]."""
    for r in range(n):
        soff, doff = r * ss, r * ds
        acc = vsplat(np.float32(0.0))
        for j in range(0, width, LB):
            acc = vadd(acc, load_lanes(src, soff + j, width - j))
        mean = vsplat(vsum(acc) / np.float32(width))
        acc = vsplat(np.float32(0.0))
        for j in range(0, width, LB):
            d = vfirst(vsub(load_lanes(src, soff + j, width - j), mean), width - j)
            acc = vfma(d, d, acc)
        rstd = vsplat(np.float32(1.0 / math.sqrt(np.float64(vsum(acc) / np.float32(width)) + eps)))
        for j in range(0, width, LB):
            d = vmul(vsub(load_lanes(src, soff + j, width - j), mean), rstd)
            y = vfma(d, load_lanes(w, g_of + j, width - j), load_lanes(w, b_of + j, width - j))
            store_lanes(dst, doff + j, y, width - j)


# -------------------------------------------------------------------------------------------- the stack


@njit(inline="always")
def apply_layer(w, row, src, ss, dst, ds, n):
    """One row-wise layer on n rows: src rows (stride ss) -> dst rows (stride ds)."""
    kind, width, act = row[T_KIND], row[T_OUT], row[T_ACT]
    if kind == K_LINEAR:
        linear_rows(w, row[T_W], row[T_B], row[T_IN], row[T_NBLK], width, src, ss, dst, ds, n)
        if act != A_NONE:
            activation_rows(act, dst, ds, dst, ds, n, width)
    elif kind == K_ACTIVATION:
        activation_rows(act, src, ss, dst, ds, n, width)
    else:  # K_LAYER_NORM
        layer_norm_rows(w, row[T_W], row[T_B], np.float64(w[row[T_EPS]]), src, ss, dst, ds, n, width)


@njit(**JIT)
def scratch_stride(table):
    """Row stride of the ping-pong buffers: the widest output of every layer but the last, padded to LB."""
    widest = 0
    for i in range(table.shape[0] - 1):
        widest = max(widest, table[i, T_OUT])
    return -(-widest // LB) * LB


@njit(**JIT)
def layers_scratch_floats(table, n_rows):
    """Floats of scratch rows_forward / tokens_forward need for n_rows rows."""
    return 2 * min(max(n_rows, 1), ROW_CHUNK) * scratch_stride(table)


@njit(inline="always")
def stack_chunk(w, table, first, src, ss, src_half, out, os, n, buf, bs, half):
    """Layers first..last of `table` on n rows: src rows (stride ss) -> out rows (stride os). The layers
    between write to the two halves of buf (`half` floats each, rows of stride bs), never to the half they
    read: src_half says which half src is (-1: src is not in buf)."""
    last = table.shape[0] - 1
    cur = src_half
    for i in range(first, last + 1):
        if i == last:
            dst, ds = out, os
        else:
            cur = 1 if cur == 0 else 0
            dst, ds = padd(buf, cur * half), bs
        apply_layer(w, table[i], src, ss, dst, ds, n)
        src, ss = dst, ds


@njit(**JIT)
def rows_forward(lbuf, table, x, out, scratch):
    """out (N, C) = the layers of `table` on every row of x (N, F0); C-contiguous float32 arrays.
    False, touching nothing, when the shapes do not fit the table or the scratch is short."""
    N = x.shape[0]
    L = table.shape[0]
    if (L == 0 or table[0, T_KIND] == K_EMBEDDING or x.shape[1] != table[0, T_IN] or out.shape[0] != N
            or out.shape[1] != table[L - 1, T_OUT] or scratch.shape[0] < layers_scratch_floats(table, N)):
        return False
    w, src, dst, buf = fptr(lbuf), fptr(x), fptr(out), fptr(scratch)
    F, C, bs = x.shape[1], out.shape[1], scratch_stride(table)
    half = min(N, ROW_CHUNK) * bs
    for r0 in range(0, N, ROW_CHUNK):
        n = min(ROW_CHUNK, N - r0)
        stack_chunk(w, table, 0, padd(src, r0 * F), F, -1, padd(dst, r0 * C), C, n, buf, bs, half)
    return True


@njit(**JIT)
def first_bad_id(ids, V):
    """The index of the first id outside [0, V), or -1."""
    for i in range(ids.shape[0]):
        if ids[i] < 0 or ids[i] >= V:
            return i
    return -1


@njit(inline="always")
def gather_rows(w, table_of, E, ids, r0, n, dst, ds):
    """dst rows j (stride ds) = embedding rows ids[r0 + j] (E floats each, table at w[table_of:])."""
    for j in range(n):
        src = table_of + ids[r0 + j] * E
        for k in range(0, E, LB):
            store_lanes(dst, j * ds + k, load_lanes(w, src + k, E - k), E - k)


@njit(**JIT)
def tokens_forward(lbuf, table, ids, out, scratch):
    """out (N, C) = the stack of `table` (an embedding first) on token ids (N,) int64. Returns -1 when done,
    the index of the first id outside [0, V) (nothing written), or -2 when shapes do not fit."""
    N, L = ids.shape[0], table.shape[0]
    if (L == 0 or table[0, T_KIND] != K_EMBEDDING or out.shape[0] != N or out.shape[1] != table[L - 1, T_OUT]
            or scratch.shape[0] < layers_scratch_floats(table, N)):
        return -2
    bad = first_bad_id(ids, table[0, T_IN])
    if bad >= 0:
        return bad
    w, dst, buf = fptr(lbuf), fptr(out), fptr(scratch)
    E, C, bs = table[0, T_OUT], out.shape[1], scratch_stride(table)
    half = min(N, ROW_CHUNK) * bs
    for r0 in range(0, N, ROW_CHUNK):
        n = min(ROW_CHUNK, N - r0)
        if L == 1:
            gather_rows(w, table[0, T_W], E, ids, r0, n, padd(dst, r0 * C), C)
        else:  # the embedding rows go to half 0 of the scratch, the layers after it take them from there
            gather_rows(w, table[0, T_W], E, ids, r0, n, buf, bs)
            stack_chunk(w, table, 1, buf, bs, 0, padd(dst, r0 * C), C, n, buf, bs, half)
    return -1


@njit(**JIT)
def select_last(y, lens, out):
    """out[b] (F,) = y[lens[b] - 1, b] for y (T, B, F); zeros for a length-0 row (its LSTM state is zero)."""
    for b in range(y.shape[1]):
        if lens[b] > 0:
            out[b, :] = y[lens[b] - 1, b, :]
        else:
            out[b, :] = 0.0
