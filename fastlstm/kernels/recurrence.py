"""Sequence drivers (run) and the whole-stack step, over the packed buffer of pack.py.

Shapes (one layer-direction; Hp = H padded to whole blocks, G = 4*BLOCK, nblk = Hp/BLOCK):
    wbuf   (N,) float32        every packed array of the model (see pack.py); m = meta[row]
    xw     (T, B, 4Hp)         input projection b + Wp @ x for the whole sequence (project_blocks)
    lens   (B,) int64          valid steps per batch row (T when there is no sequence_lens)
    h      (B, Hout)           state in, final state out (taken at each row's last valid step)
    c      (B, H)              state in, final state out
    y      (T, B, Hout)        outputs (may be a strided view); rows past a sequence's length are 0
Per time step: hc (B, Hp) = o * h(c) is built block by block into scratch, then h = hc or proj @ hc.
Parallel drivers split the blocks into one contiguous range per thread, so each core streams (and
keeps in its own L2) only its slice of R.
"""

import numpy as np
from numba import njit, prange

from .cell import dot_rows, dot_rows2, update_fast, update_general
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
)


@njit(**JIT)
def weights_of(wbuf, m):
    """The packed arrays of one layer-direction (views into wbuf): Wp, Rp, b, peep, proj, cellf."""
    I, H, Hout, nblk = m[M_I], m[M_H], m[M_HOUT], m[M_NBLK]
    G = 4 * BLOCK
    Wp = wbuf[m[M_WP] : m[M_WP] + nblk * G * I].reshape((nblk * G, I))
    Rp = wbuf[m[M_RP] : m[M_RP] + nblk * G * Hout].reshape((nblk * G, Hout))
    b = wbuf[m[M_B] : m[M_B] + nblk * G]
    n_peep = 3 * H if m[M_PEEP] >= 0 else 0
    peep = wbuf[max(m[M_PEEP], 0) : max(m[M_PEEP], 0) + n_peep].reshape((n_peep // H, H))
    n_proj = Hout * H if m[M_PROJ] >= 0 else 0
    proj = wbuf[max(m[M_PROJ], 0) : max(m[M_PROJ], 0) + n_proj].reshape((n_proj // H, H))
    cellf = wbuf[m[M_CELLF] : m[M_CELLF] + CELLF]
    return Wp, Rp, b, peep, proj, cellf


@njit(**JIT)
def project_blocks(wbuf, m, x, xw, blk0, blk1):
    """xw[:, blocks blk0..blk1] = b + x @ Wp.T for x (N, I), xw (N, 4Hp): the input projection of run().

    The same dot_rows2 calls as step(), so run() and step() give bit-identical results. Block by block:
    a block's (G, I) slab of Wp stays in cache while all N rows use it."""
    Wp, Rp, b, peep, proj, cellf = weights_of(wbuf, m)
    G = 4 * BLOCK
    N = x.shape[0]
    spare = np.empty(G, np.float32)
    for blk in range(blk0, blk1):
        c0 = blk * G
        slab = Wp[c0 : c0 + G]
        for n in range(N):
            xw[n, c0 : c0 + G] = b[c0 : c0 + G]
        for n in range(0, N, 2):
            n1 = min(n + 1, N - 1)  # an odd last row pairs with itself (its second sum is discarded)
            if n1 == n:
                dot_rows2(slab, x[n], x[n], xw[n, c0 : c0 + G], spare)
            else:
                dot_rows2(slab, x[n], x[n1], xw[n, c0 : c0 + G], xw[n1, c0 : c0 + G])


@njit(**JIT_PARALLEL)
def project_parallel(wbuf, m, x, xw, threads):
    """project_blocks over all blocks, one contiguous range of blocks per thread."""
    nblk = m[M_NBLK]
    nth = max(1, min(threads, nblk))
    for tid in prange(nth):
        project_blocks(wbuf, m, x, xw, tid * nblk // nth, (tid + 1) * nblk // nth)


@njit(**JIT)
def update_block(m, peep, cellf, codes, blk, acc, c, hc):
    """acc (G,) holds block blk's gate pre-activations: update its units of c and hc = o * h(c)."""
    unit0 = blk * BLOCK
    units = min(BLOCK, m[M_H] - unit0)
    if m[M_FAST]:
        update_fast(acc, BLOCK, units, c[unit0 : unit0 + units], hc[unit0 : unit0 + units])
    else:
        update_general(acc, BLOCK, units, c[unit0 : unit0 + units], hc[unit0 : unit0 + units],
                       peep, unit0, peep.shape[0] == 3, cellf, codes, m[M_INPUT_FORGET] != 0)


@njit(**JIT)
def cell_block(m, Rp, peep, cellf, codes, blk, hprev, acc, c, hc):
    """acc (G,) holds xw + bias for block blk: add its rows of Rp @ hprev, then update c and hc."""
    dot_rows(Rp[blk * 4 * BLOCK : (blk + 1) * 4 * BLOCK], hprev, acc)
    update_block(m, peep, cellf, codes, blk, acc, c, hc)


@njit(**JIT)
def step_blocks(m, Wp, Rp, peep, cellf, codes, xin, hprev, gates, c, hc, spare, blk0, blk1):
    """step(): blocks blk0..blk1 of one layer; gates (4Hp,) holds the bias on entry. Per block:
    W @ xin with the same dot_rows2 call as run()'s projection (bit-identical modes), then the cell."""
    G = 4 * BLOCK
    for blk in range(blk0, blk1):
        acc = gates[blk * G : (blk + 1) * G]
        dot_rows2(Wp[blk * G : (blk + 1) * G], xin, xin, acc, spare)
        cell_block(m, Rp, peep, cellf, codes, blk, hprev, acc, c, hc)


@njit(inline="always")
def row_time(step, length, reverse):
    """The time index a row of valid length `length` processes at `step`, or -1 once it is done."""
    if step >= length:
        return -1
    return length - 1 - step if reverse else step


@njit(**JIT)
def emit_h(proj, hc, h):
    """h (Hout,) = hc[:H] without a projection, proj @ hc[:H] with one."""
    if proj.shape[0] == 0:
        for k in range(h.shape[0]):
            h[k] = hc[k]
    else:
        H = proj.shape[1]
        for k in range(h.shape[0]):
            acc = np.float32(0.0)
            for j in range(H):
                acc += proj[k, j] * hc[j]
            h[k] = acc


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
    """One layer-direction over the sequence on the calling thread (xw is consumed as scratch)."""
    Wp, Rp, b, peep, proj, cellf = weights_of(wbuf, m)
    T, B = xw.shape[0], xw.shape[1]
    nblk = m[M_NBLK]
    G = 4 * BLOCK
    codes = m[M_FCODE : M_HCODE + 1]
    reverse = m[M_REVERSE] != 0
    hc = np.zeros(nblk * BLOCK, np.float32)
    for step in range(T):
        for r in range(B):
            t = row_time(step, lens[r], reverse)
            if t < 0:
                continue
            gates = xw[t, r]
            for blk in range(nblk):
                cell_block(m, Rp, peep, cellf, codes, blk, h[r], gates[blk * G : (blk + 1) * G], c[r], hc)
            emit_h(proj, hc, h[r])
            y[t, r, :] = h[r]
    finish(lens, h, c, y)


@njit(**JIT_PARALLEL)
def run_parallel(wbuf, m, xw, lens, h, c, y, threads):
    """run_serial with each time step's blocks split over `threads` threads (one parallel region per
    step; the caller passes numba.get_num_threads(), reading it here would defeat the cache)."""
    Wp, Rp, b, peep, proj, cellf = weights_of(wbuf, m)
    T, B = xw.shape[0], xw.shape[1]
    nblk = m[M_NBLK]
    G = 4 * BLOCK
    codes = m[M_FCODE : M_HCODE + 1]
    reverse = m[M_REVERSE] != 0
    nth = max(1, min(threads, nblk))
    hc = np.zeros(nblk * BLOCK, np.float32)
    for step in range(T):
        for r in range(B):
            t = row_time(step, lens[r], reverse)
            if t < 0:
                continue
            gates = xw[t, r]
            hr, cr = h[r], c[r]
            for tid in prange(nth):
                for blk in range(tid * nblk // nth, (tid + 1) * nblk // nth):
                    cell_block(m, Rp, peep, cellf, codes, blk, hr, gates[blk * G : (blk + 1) * G], cr, hc)
            emit_h(proj, hc, h[r])
            y[t, r, :] = h[r]
    finish(lens, h, c, y)


@njit(**JIT)
def step_stack(wbuf, meta, x, h, c, scratch):
    """One frame through every layer (one direction each) for B rows; the whole step in one call.

    x (B*I0,) rows of x_t   h (L, 1, B, Hout)   c (L, 1, B, H)   advanced in place
    scratch (>= 5 Hp + G) float32: gates (4Hp), hc (Hp), spare (G). Layer l reads layer l-1's new h as its
    input. The output is the last layer's new h (the caller copies h[L-1, 0])."""
    L, B, I0 = meta.shape[0], h.shape[2], meta[0, M_I]
    G = 4 * BLOCK
    for r in range(B):
        for l in range(L):
            m = meta[l]
            Wp, Rp, bias, peep, proj, cellf = weights_of(wbuf, m)
            nblk = m[M_NBLK]
            codes = m[M_FCODE : M_HCODE + 1]
            xin = x[r * I0 : (r + 1) * I0] if l == 0 else h[l - 1, 0, r]
            gates = scratch[: nblk * G]
            hc = scratch[nblk * G : nblk * G + nblk * BLOCK]
            spare = scratch[nblk * G + nblk * BLOCK : nblk * G + nblk * BLOCK + G]
            gates[:] = bias
            step_blocks(m, Wp, Rp, peep, cellf, codes, xin, h[l, 0, r], gates, c[l, 0, r], hc, spare, 0, nblk)
            emit_h(proj, hc, h[l, 0, r])


@njit(**JIT_PARALLEL)
def step_parallel(wbuf, meta, x, h, c, scratch, threads):
    """step_stack for one row (B = 1) with each layer's blocks split over `threads` threads: the same
    per-block arithmetic, so the result is bit-identical. Pays only for big layers (see engine)."""
    L = meta.shape[0]
    G = 4 * BLOCK
    for l in range(L):
        m = meta[l]
        Wp, Rp, bias, peep, proj, cellf = weights_of(wbuf, m)
        nblk = m[M_NBLK]
        codes = m[M_FCODE : M_HCODE + 1]
        xin = x if l == 0 else h[l - 1, 0, 0]
        hprev = h[l, 0, 0]
        cl = c[l, 0, 0]
        gates = scratch[: nblk * G]
        hc = scratch[nblk * G : nblk * G + nblk * BLOCK]
        spares = scratch[nblk * G + nblk * BLOCK :]
        nth = max(1, min(threads, nblk, spares.shape[0] // G))
        gates[:] = bias
        for tid in prange(nth):
            step_blocks(m, Wp, Rp, peep, cellf, codes, xin, hprev, gates, cl, hc, spares[tid * G : (tid + 1) * G],
                        tid * nblk // nth, (tid + 1) * nblk // nth)
        emit_h(proj, hc, h[l, 0, 0])


def scratch_size(meta) -> int:
    """Floats of scratch step_stack / step_parallel need: gates (4Hp) + hc (Hp) + spare gate blocks (G
    per thread, room for 8)."""
    return 5 * int(meta[:, M_NBLK].max()) * BLOCK + 8 * 4 * BLOCK


@njit(**JIT)
def gather_rows(x, step, lens, reverse, h, xh):
    """Batched path, before the GEMM: xh[r] = [x[t_r, r] | h[r]] for every row active at `step`
    (t_r = step, or lens[r]-1-step in reverse). x (T, B, I), h (B, Hout), xh (B, I + Hout)."""
    I = x.shape[2]
    for r in range(x.shape[1]):
        t = row_time(step, lens[r], reverse)
        if t < 0:
            continue
        xh[r, :I] = x[t, r]
        xh[r, I:] = h[r]


@njit(**JIT)
def cell_rows(wbuf, m, step, gates, lens, h, c, y):
    """Batched path, after the GEMM gates (B, 4Hp) = xh @ WRt: for every row active at `step`, add the
    bias, update the cell, write h[r] and y[t_r, r]."""
    Wp, Rp, b, peep, proj, cellf = weights_of(wbuf, m)
    nblk = m[M_NBLK]
    G = 4 * BLOCK
    codes = m[M_FCODE : M_HCODE + 1]
    reverse = m[M_REVERSE] != 0
    hc = np.empty(nblk * BLOCK, np.float32)
    for r in range(gates.shape[0]):
        t = row_time(step, lens[r], reverse)
        if t < 0:
            continue
        g = gates[r]
        for j in range(g.shape[0]):
            g[j] += b[j]
        for blk in range(nblk):
            update_block(m, peep, cellf, codes, blk, g[blk * G : (blk + 1) * G], c[r], hc)
        emit_h(proj, hc, h[r])
        y[t, r, :] = h[r]

