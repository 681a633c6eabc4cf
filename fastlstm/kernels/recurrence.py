"""Sequence drivers (run) and the whole-stack step, over the packed buffer of pack.py.

Shapes (one layer-direction; Hp = H padded to whole blocks, nblk = Hp/BLOCK, G = 4*BLOCK, m = meta[row]):
    wbuf   (N,) float32        every packed array of the model (see pack.py)
    x      (N, I)              input rows (time-major T*B rows in run(), the B frames in step())
    xw     (N, 4Hp)            gate pre-activations b + x Wp, packed gate index; consumed as scratch
    lens   (B,) int64          valid steps per batch row (T when there is no sequence_lens)
    h      (B, Hout)           state in, final state out (taken at each row's last valid step)
    c      (B, H)              state in, final state out
    hc     (B, Hp)             scratch: o * h(c) of the step being computed (h = hc or proj @ hc)
    y      (T, B, Hout)        outputs (may be a strided view); rows past a sequence's length are 0
    rows   (B,) int64          the batch rows active at a step, compacted; goff (B,) the flat offset
                               of each active row's gate vector in xw; times (B,) its time index

One time step = recur_blocks (per block: R h + the cell, c and hc updated) then emit_rows (h from hc).
Both modes run the same code on the same numbers: run() projects the whole sequence with project_rows
and then steps; step() projects its frame with project_rows and steps. That is why they agree bit for
bit (the summation order is fixed in cell.py). Parallel drivers split the blocks into one contiguous
range per thread, so each core streams (and keeps in its own L2) only its slice of W and R.
"""

import numpy as np
from numba import njit, prange

from .cell import gemv_slab, gemv_slab2, load_gates, store_gates, update_fast, update_general
from .config import JIT, JIT_PARALLEL
from .pack import (
    BLOCK,
    CELLF,
    M_B,
    M_CELLF,
    M_FAST,
    M_FCODE,
    M_H,
    M_HCODE,
    M_HOUT,
    M_I,
    M_INPUT_FORGET,
    M_NBLK,
    M_PEEP,
    M_PROJ,
    M_REVERSE,
    M_RP,
    M_WP,
    G,
)
from .simd import fptr


@njit(**JIT)
def project_rows(wbuf, m, x, xw, blk0, blk1):
    """xw[:, blocks blk0..blk1] = b + x @ Wp for x (N, I) (or its (N*I,) flat view), xw (N, 4Hp). Block
    by block (a block's (I, G) slab stays in cache while every row uses it), rows in pairs sharing each
    weight load."""
    I, N = m[M_I], xw.shape[0]
    Hp4 = m[M_NBLK] * G
    w, xp, out = fptr(wbuf), fptr(x), fptr(xw)
    for blk in range(blk0, blk1):
        slab = m[M_WP] + blk * I * G
        b0, b1, b2, b3 = load_gates(w, m[M_B] + blk * G)
        for n in range(0, N - 1, 2):
            s = gemv_slab2(w, slab, I, xp, n * I, (n + 1) * I, b0, b1, b2, b3, b0, b1, b2, b3)
            store_gates(out, n * Hp4 + blk * G, s[0], s[1], s[2], s[3])
            store_gates(out, (n + 1) * Hp4 + blk * G, s[4], s[5], s[6], s[7])
        if N % 2:
            s = gemv_slab(w, slab, I, xp, (N - 1) * I, b0, b1, b2, b3)
            store_gates(out, (N - 1) * Hp4 + blk * G, s[0], s[1], s[2], s[3])


@njit(**JIT_PARALLEL)
def project_parallel(wbuf, m, x, xw, threads):
    """project_rows over all blocks, one contiguous range of blocks per thread."""
    nblk = m[M_NBLK]
    nth = max(1, min(threads, nblk))
    for tid in prange(nth):
        project_rows(wbuf, m, x, xw, tid * nblk // nth, (tid + 1) * nblk // nth)


@njit(**JIT)
def update_general_block(wbuf, m, xw, goff, blk, c, hc, r):
    """The general cell (any ONNX options) for block blk of row r, from the gates stored at
    xw.flat[goff : goff+G]; float64 math in update_general."""
    H = m[M_H]
    unit0 = blk * BLOCK
    units = min(BLOCK, H - unit0)
    n_peep = 3 * H if m[M_PEEP] >= 0 else 0
    peep = wbuf[max(m[M_PEEP], 0) : max(m[M_PEEP], 0) + n_peep].reshape((n_peep // H, H))
    cellf = wbuf[m[M_CELLF] : m[M_CELLF] + CELLF]
    acc = xw.reshape(xw.size)[goff : goff + G]
    update_general(acc, BLOCK, units, c[r, unit0 : unit0 + units], hc[r, unit0 : unit0 + units], peep, unit0,
                   n_peep > 0, cellf, m[M_FCODE : M_HCODE + 1], m[M_INPUT_FORGET] != 0)


@njit(**JIT)
def recur_blocks(wbuf, m, xw, goff, rows, n, h, c, hc, blk0, blk1):
    """One time step of blocks blk0..blk1 for the n active rows rows[:n]: gates = xw.flat[goff[j] + blk*G
    ...] + Rp @ h[rows[j]], then the cell (c and hc of those rows and blocks). Rows go in pairs that
    share each load of R. Reads h, never writes it (every block needs the previous h)."""
    Hout, H, Hp = m[M_HOUT], m[M_H], hc.shape[1]
    fast = m[M_FAST] != 0
    w, gates, hp, cp, hcp = fptr(wbuf), fptr(xw), fptr(h), fptr(c), fptr(hc)
    for blk in range(blk0, blk1):
        slab = m[M_RP] + blk * Hout * G
        unit0 = blk * BLOCK
        units = min(BLOCK, H - unit0)
        j = 0
        while j < n:
            r0 = rows[j]
            g0 = goff[j] + blk * G
            a0, a1, a2, a3 = load_gates(gates, g0)
            if j + 1 < n:  # a pair: both rows share every load of R
                r1 = rows[j + 1]
                g1 = goff[j + 1] + blk * G
                b0, b1, b2, b3 = load_gates(gates, g1)
                a0, a1, a2, a3, b0, b1, b2, b3 = gemv_slab2(w, slab, Hout, hp, r0 * Hout, r1 * Hout,
                                                            a0, a1, a2, a3, b0, b1, b2, b3)
                if fast:
                    update_fast(b0, b1, b2, b3, cp, r1 * H + unit0, units, hcp, r1 * Hp + unit0)
                else:
                    store_gates(gates, g1, b0, b1, b2, b3)
                    update_general_block(wbuf, m, xw, g1, blk, c, hc, r1)
                j += 1
            else:
                a0, a1, a2, a3 = gemv_slab(w, slab, Hout, hp, r0 * Hout, a0, a1, a2, a3)
            if fast:
                update_fast(a0, a1, a2, a3, cp, r0 * H + unit0, units, hcp, r0 * Hp + unit0)
            else:
                store_gates(gates, g0, a0, a1, a2, a3)
                update_general_block(wbuf, m, xw, g0, blk, c, hc, r0)
            j += 1


@njit(**JIT)
def emit_rows(wbuf, m, hc, rows, n, h):
    """h[r] (Hout,) = hc[r, :H] without a projection, proj (Hout, H) @ hc[r, :H] with one."""
    H, Hout = m[M_H], m[M_HOUT]
    for j in range(n):
        r = rows[j]
        if m[M_PROJ] < 0:
            h[r, :] = hc[r, :H]
            continue
        proj = wbuf[m[M_PROJ] : m[M_PROJ] + Hout * H].reshape((Hout, H))
        for k in range(Hout):
            acc = np.float32(0.0)
            for u in range(H):
                acc += proj[k, u] * hc[r, u]
            h[r, k] = acc


@njit(inline="always")
def row_time(step, length, reverse):
    """The time index a row of valid length `length` processes at `step`, or -1 once it is done."""
    if step >= length:
        return -1
    return length - 1 - step if reverse else step


@njit(**JIT)
def active_rows(step, lens, reverse, row_stride, rows, goff, times):
    """Compact the rows active at `step` into rows/times/goff (goff = flat offset of xw[t, r]); their count."""
    B = lens.shape[0]
    n = 0
    for r in range(B):
        t = row_time(step, lens[r], reverse)
        if t >= 0:
            rows[n], times[n], goff[n] = r, t, (t * B + r) * row_stride
            n += 1
    return n


@njit(**JIT)
def finish(lens, h, c, y):
    """ONNX: outputs past each row's length are 0; a length-0 row ends with a zero state."""
    T, B = y.shape[0], y.shape[1]
    for b in range(B):
        for t in range(lens[b], T):
            y[t, b, :] = 0.0
        if lens[b] == 0:
            h[b, :] = 0.0
            c[b, :] = 0.0


@njit(**JIT)
def run_serial(wbuf, m, xw, lens, h, c, y):
    """One layer-direction over the sequence on the calling thread, from xw (T, B, 4Hp) (consumed)."""
    T, B = xw.shape[0], xw.shape[1]
    reverse = m[M_REVERSE] != 0
    rows, goff, times = np.empty(B, np.int64), np.empty(B, np.int64), np.empty(B, np.int64)
    hc = np.zeros((B, m[M_NBLK] * BLOCK), np.float32)
    for step in range(T):
        n = active_rows(step, lens, reverse, xw.shape[2], rows, goff, times)
        if n == 0:
            break  # row_time is -1 for every later step too
        recur_blocks(wbuf, m, xw, goff, rows, n, h, c, hc, 0, m[M_NBLK])
        emit_rows(wbuf, m, hc, rows, n, h)
        for j in range(n):
            y[times[j], rows[j], :] = h[rows[j]]
    finish(lens, h, c, y)


@njit(**JIT_PARALLEL)
def run_parallel(wbuf, m, xw, lens, h, c, y, threads):
    """run_serial with each time step's blocks split over `threads` threads (one parallel region per
    step; the caller passes numba.get_num_threads(), reading it here would defeat the cache)."""
    T, B = xw.shape[0], xw.shape[1]
    reverse = m[M_REVERSE] != 0
    nblk = m[M_NBLK]
    nth = max(1, min(threads, nblk))
    rows, goff, times = np.empty(B, np.int64), np.empty(B, np.int64), np.empty(B, np.int64)
    hc = np.zeros((B, nblk * BLOCK), np.float32)
    for step in range(T):
        n = active_rows(step, lens, reverse, xw.shape[2], rows, goff, times)
        if n == 0:
            break
        for tid in prange(nth):
            recur_blocks(wbuf, m, xw, goff, rows, n, h, c, hc, tid * nblk // nth, (tid + 1) * nblk // nth)
        emit_rows(wbuf, m, hc, rows, n, h)
        for j in range(n):
            y[times[j], rows[j], :] = h[rows[j]]
    finish(lens, h, c, y)


@njit(**JIT)
def step_views(meta, h, scratch):
    """step()'s scratch as (gates (B, 4Hp), hc (B, Hp)) and its all-rows tables rows = 0..B-1, goff."""
    B = h.shape[2]
    Hp = meta[0, M_NBLK] * BLOCK  # every layer has the same H
    gates = scratch[: B * 4 * Hp].reshape((B, 4 * Hp))
    hc = scratch[B * 4 * Hp : B * 5 * Hp].reshape((B, Hp))
    rows = np.arange(B)
    return gates, hc, rows, rows * (4 * Hp)


@njit(**JIT)
def step_stack(wbuf, meta, x, h, c, scratch):
    """One frame through every layer (one direction each) for B rows; the whole step in one call.

    x (B*I0,) frames   h (L, 1, B, Hout)   c (L, 1, B, H)   advanced in place
    scratch (>= 5 B Hp) float32 (scratch_size). Layer l reads layer l-1's new h as its input. The
    output is the last layer's new h (the caller copies h[L-1, 0])."""
    gates, hc, rows, goff = step_views(meta, h, scratch)
    B = h.shape[2]
    for l in range(meta.shape[0]):
        m = meta[l]
        if l == 0:
            project_rows(wbuf, m, x, gates, 0, m[M_NBLK])
        else:
            project_rows(wbuf, m, h[l - 1, 0], gates, 0, m[M_NBLK])
        recur_blocks(wbuf, m, gates, goff, rows, B, h[l, 0], c[l, 0], hc, 0, m[M_NBLK])
        emit_rows(wbuf, m, hc, rows, B, h[l, 0])


@njit(**JIT_PARALLEL)
def step_parallel(wbuf, meta, x, h, c, scratch, threads):
    """step_stack with each layer's blocks split over `threads` threads (one parallel region per layer:
    a thread projects and steps its own blocks). Same per-block arithmetic: bit-identical."""
    gates, hc, rows, goff = step_views(meta, h, scratch)
    B = h.shape[2]
    for l in range(meta.shape[0]):
        m = meta[l]
        nblk = m[M_NBLK]
        nth = max(1, min(threads, nblk))
        for tid in prange(nth):
            blk0, blk1 = tid * nblk // nth, (tid + 1) * nblk // nth
            if l == 0:
                project_rows(wbuf, m, x, gates, blk0, blk1)
            else:
                project_rows(wbuf, m, h[l - 1, 0], gates, blk0, blk1)
            recur_blocks(wbuf, m, gates, goff, rows, B, h[l, 0], c[l, 0], hc, blk0, blk1)
        emit_rows(wbuf, m, hc, rows, B, h[l, 0])


def scratch_size(meta, batch: int) -> int:
    """Floats of scratch step_stack / step_parallel need for `batch` rows: gates (4Hp) + hc (Hp) each."""
    return 5 * batch * int(meta[:, M_NBLK].max()) * BLOCK
