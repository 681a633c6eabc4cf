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
Both modes run the same code on the same numbers: run() projects the whole sequence with project_all
and then steps; step() projects its frame with project_rows and steps. That is why they agree bit for
bit (the summation order is fixed in cell.py). Parallel drivers split the blocks into one contiguous
range per thread, so each core streams (and keeps in its own L2) only its slice of W and R.
"""

import numpy as np
from numba import njit, prange

from .cell import gemm_4row, gemm_6row, gemv_1, gemv_2blk, load_gates, store_gates, update_fast, update_general
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
from .simd import fptr, fptr_strided, vload, vload_n, vstore, vstore_n


@njit(inline="always")
def serpentine(i, lo, hi, down):
    """The i-th of lo..hi-1, counted from hi-1 when `down`: drivers sweep the blocks up on one step and
    down on the next, so the weights the last sweep touched (still in L1/L2) are read first."""
    return hi - 1 - i if down else lo + i


# The row-tile GEMM in gates_add works on panels of PANEL rows (their inputs stay in L2 while every block
# passes over them) and, inside a block, on KC values of k at a time: a (KC, G) piece of the slab (32 KiB)
# stays in L1 while every tile of the panel uses it. A chain's partial sum waits in `out` between pieces
# as the same float32 it is in a register, so the chunking changes no bit. PANEL is a multiple of 6 and 4
# (the tile heights); KC = 128 measured 5-10% faster than 96 or 192 with 6-row tiles (docs/performance.md).
PANEL = 252
KC = 128


@njit(inline="always")
def block_start(w, bias_of, out, o, blk):
    """A block's starting gate vectors for one row: the bias (packed at bias_of) or the value in out[o:]."""
    if bias_of >= 0:
        return load_gates(w, bias_of + blk * G)
    return load_gates(out, o)


@njit(inline="always")
def block_done(out, o, a0, a1, a2, a3, cell, r, blk):
    """A block's finished gate sums for row r: with cell = (True, c, hc, H, Hp) straight through the
    default cell (c and hc of row r updated, the gates never stored), with cell[0] False stored at out[o:]."""
    fuse, cp, hcp, H, Hp = cell
    if fuse:
        unit0 = blk * BLOCK
        update_fast(a0, a1, a2, a3, cp, r * H + unit0, min(BLOCK, H - unit0), hcp, r * Hp + unit0)
    else:
        store_gates(out, o, a0, a1, a2, a3)


@njit(inline="always")
def piece_done(out, o, a0, a1, a2, a3, partial, cell, r, blk):
    """A tile row's gate sums after one piece of k: parked in out[o:] when more pieces follow, else block_done."""
    if partial:
        store_gates(out, o, a0, a1, a2, a3)
    else:
        block_done(out, o, a0, a1, a2, a3, cell, r, blk)


@njit(inline="always")
def tile_6rows(w, slab, kn, v, K, k0, rows, j, out, orow, blk, first, partial, cell):
    """Rows j..j+5 of block blk over k = k0..k0+kn (gemm_6row), started from `first` (block_start)."""
    o0, o1, o2 = orow[j] + blk * G, orow[j + 1] + blk * G, orow[j + 2] + blk * G
    o3, o4, o5 = orow[j + 3] + blk * G, orow[j + 4] + blk * G, orow[j + 5] + blk * G
    acc = (*block_start(w, first, out, o0, blk), *block_start(w, first, out, o1, blk),
           *block_start(w, first, out, o2, blk), *block_start(w, first, out, o3, blk),
           *block_start(w, first, out, o4, blk), *block_start(w, first, out, o5, blk))
    s = gemm_6row(w, slab, kn, v, rows[j] * K + k0, rows[j + 1] * K + k0, rows[j + 2] * K + k0,
                  rows[j + 3] * K + k0, rows[j + 4] * K + k0, rows[j + 5] * K + k0, acc)
    piece_done(out, o0, s[0], s[1], s[2], s[3], partial, cell, rows[j], blk)
    piece_done(out, o1, s[4], s[5], s[6], s[7], partial, cell, rows[j + 1], blk)
    piece_done(out, o2, s[8], s[9], s[10], s[11], partial, cell, rows[j + 2], blk)
    piece_done(out, o3, s[12], s[13], s[14], s[15], partial, cell, rows[j + 3], blk)
    piece_done(out, o4, s[16], s[17], s[18], s[19], partial, cell, rows[j + 4], blk)
    piece_done(out, o5, s[20], s[21], s[22], s[23], partial, cell, rows[j + 5], blk)


@njit(inline="always")
def tile_4rows(w, slab, kn, v, K, k0, rows, j, out, orow, blk, first, partial, cell):
    """tile_6rows for rows j..j+3 (gemm_4row)."""
    o0, o1, o2, o3 = orow[j] + blk * G, orow[j + 1] + blk * G, orow[j + 2] + blk * G, orow[j + 3] + blk * G
    acc = (*block_start(w, first, out, o0, blk), *block_start(w, first, out, o1, blk),
           *block_start(w, first, out, o2, blk), *block_start(w, first, out, o3, blk))
    s = gemm_4row(w, slab, kn, v, rows[j] * K + k0, rows[j + 1] * K + k0, rows[j + 2] * K + k0,
                  rows[j + 3] * K + k0, acc)
    piece_done(out, o0, s[0], s[1], s[2], s[3], partial, cell, rows[j], blk)
    piece_done(out, o1, s[4], s[5], s[6], s[7], partial, cell, rows[j + 1], blk)
    piece_done(out, o2, s[8], s[9], s[10], s[11], partial, cell, rows[j + 2], blk)
    piece_done(out, o3, s[12], s[13], s[14], s[15], partial, cell, rows[j + 3], blk)


@njit(inline="always")
def tile_rows(n):
    """How n rows split into tiles: rows 0..n6 in 6-row tiles, the next n4 in 4-row tiles, the 0 or 1 (2 or 3
    when n < 4) left over one at a time. Trading one 6-row tile for 4-row ones avoids 2-3 leftovers (B = 8:
    4 + 4, not 6 + 1 + 1)."""
    n6 = n - n % 6
    if n - n6 in (2, 3) and n6 >= 6:
        n6 -= 6
    n4 = (n - n6) - (n - n6) % 4
    return n6, n4


@njit(**JIT)
def gates_add(w, slab_of, K, v, rows, out, orow, n, blk0, blk1, down, bias_of, cell):
    """Gate sums of blocks blk0..blk1 for the n rows j: start + v[rows[j]] @ slab, every (row, block) pair
    as one FMA chain over k (cell.py), then block_done (stored at out[orow[j] + blk*G ...] or through the
    fused cell).

    w: the packed weights; slab_of: offset of block 0's (K, G) slab (block blk at slab_of + blk*K*G);
    v: input rows (float32 pointer) of K floats, rows[j] the index of row j; out: gate rows (pointer),
    orow[j] the offset of row j's 4Hp gate vector; start: the packed bias at bias_of when bias_of >= 0,
    else the value already in `out`; down: sweep the blocks from blk1-1 down (the order of blocks changes
    which weights are cached, never a result). Rows go in tiles of six or four per block (each weight load
    feeds 24 or 16 chains; tile_rows), panel by panel and KC at a time; leftover rows go one at a time, two
    blocks at a time (8 chains in flight)."""
    n6, n4 = tile_rows(n)
    p0 = 0
    while p0 < n6 + n4:  # the last panel takes the (at most 8) rows of 4-row tiles too: one more sweep
        p1 = p0 + PANEL if p0 + PANEL < n6 else n6 + n4  # over the blocks would stream R again each step
        for i in range(blk1 - blk0):
            blk = serpentine(i, blk0, blk1, down)
            for k0 in range(0, K, KC):
                kn = min(KC, K - k0)
                slab = slab_of + (blk * K + k0) * G
                first = bias_of if k0 == 0 else -1  # later pieces go on from the partial sums in out
                partial = k0 + kn < K
                for j in range(p0, min(p1, n6), 6):
                    tile_6rows(w, slab, kn, v, K, k0, rows, j, out, orow, blk, first, partial, cell)
                for j in range(max(p0, n6), p1, 4):
                    tile_4rows(w, slab, kn, v, K, k0, rows, j, out, orow, blk, first, partial, cell)
        p0 = p1
    slots = (blk1 - blk0 + 1) // 2  # pairs blk0, blk0+1, ...; then the odd last block alone
    for j in range(n6 + n4, n):
        r = rows[j]
        for p in range(slots):
            blk = blk0 + 2 * serpentine(p, 0, slots, down)
            o0 = orow[j] + blk * G
            a0, a1, a2, a3 = block_start(w, bias_of, out, o0, blk)
            if blk + 1 < blk1:
                b0, b1, b2, b3 = block_start(w, bias_of, out, o0 + G, blk + 1)
                s = gemv_2blk(w, slab_of + blk * K * G, slab_of + (blk + 1) * K * G, K, v, r * K,
                              a0, a1, a2, a3, b0, b1, b2, b3)
                block_done(out, o0, s[0], s[1], s[2], s[3], cell, r, blk)
                block_done(out, o0 + G, s[4], s[5], s[6], s[7], cell, r, blk + 1)
            else:
                s1 = gemv_1(w, slab_of + blk * K * G, K, v, r * K, a0, a1, a2, a3)
                block_done(out, o0, s1[0], s1[1], s1[2], s1[3], cell, r, blk)


@njit(inline="always")
def runtime(n, blk0, blk1, down):
    """(n, blk0, blk1, down) as plain int64/bool for the big kernels: a constant argument would be typed
    as a literal and compile one more copy of gates_add (seconds of first-ever compile each)."""
    return np.int64(n), np.int64(blk0), np.int64(blk1), np.bool_(down)


@njit(**JIT)
def project_rows(wbuf, m, x, xw, rows, goff, n, blk0, blk1, down):
    """Blocks blk0..blk1 of the gate vectors xw.flat[goff[j] : +4Hp] = b + x[rows[j]] @ Wp for the n rows
    j, x (N, I) (or its flat view); blocks swept down when `down` (gates_add)."""
    out = fptr(xw)
    n, blk0, blk1, down = runtime(n, blk0, blk1, down)
    gates_add(fptr(wbuf), m[M_WP], m[M_I], fptr(x), rows, out, goff, n, blk0, blk1, down, m[M_B],
              (np.bool_(False), out, out, np.int64(0), np.int64(0)))


@njit(**JIT)
def project_all(wbuf, m, x, xw, blk0, blk1):
    """xw (N, 4Hp) = b + x (N, I) @ Wp, blocks blk0..blk1: run()'s input projection."""
    N = xw.shape[0]
    rows = np.arange(N)
    project_rows(wbuf, m, x, xw, rows, rows * xw.shape[1], N, blk0, blk1, np.bool_(False))


@njit(**JIT_PARALLEL)
def project_parallel(wbuf, m, x, xw, threads):
    """project_all over all blocks, one contiguous range of blocks per thread."""
    nblk = m[M_NBLK]
    nth = max(1, min(threads, nblk))
    for tid in prange(nth):
        project_all(wbuf, m, x, xw, tid * nblk // nth, (tid + 1) * nblk // nth)


@njit(**JIT)
def update_general_rows(wbuf, m, xw, goff, rows, n, c, hc, blk0, blk1):
    """The general cell (any ONNX options) for blocks blk0..blk1 of the n rows rows[:n], from the gates
    stored at xw.flat[goff[j] + blk*G ...]; float64 math in update_general. The parameter views are
    built once per call, not per block."""
    H = m[M_H]
    n_peep = 3 * H if m[M_PEEP] >= 0 else 0
    peep = wbuf[max(m[M_PEEP], 0) : max(m[M_PEEP], 0) + n_peep].reshape((n_peep // H, H))
    cellf = wbuf[m[M_CELLF] : m[M_CELLF] + CELLF]
    codes = m[M_FCODE : M_HCODE + 1]
    input_forget = m[M_INPUT_FORGET] != 0
    gates = xw.reshape(xw.size)
    for j in range(n):
        r = rows[j]
        for blk in range(blk0, blk1):
            unit0 = blk * BLOCK
            units = min(BLOCK, H - unit0)
            g = goff[j] + blk * G
            update_general(gates[g : g + G], BLOCK, units, c[r, unit0 : unit0 + units], hc[r, unit0 : unit0 + units],
                           peep, unit0, n_peep > 0, cellf, codes, input_forget)


@njit(inline="always")
def recur_blocks(wbuf, m, xw, goff, rows, n, h, c, hc, blk0, blk1, down):
    """One time step of blocks blk0..blk1 for the n active rows rows[:n]: gates = xw.flat[goff[j] + blk*G
    ...] + Rp @ h[rows[j]], then the cell: c and hc of those rows and blocks. The default cell runs on the
    gate sums in registers; the general one reads them back from xw (where they are stored for it).
    Reads h, never writes it (every block needs the previous h). Blocks swept down when `down`."""
    fast = m[M_FAST] != 0
    gates = fptr(xw)
    n, blk0, blk1, down = runtime(n, blk0, blk1, down)
    gates_add(fptr(wbuf), m[M_RP], m[M_HOUT], fptr(h), rows, gates, goff, n, blk0, blk1, down, np.int64(-1),
              (fast, fptr(c), fptr(hc), m[M_H], hc.shape[1]))
    if not fast:
        update_general_rows(wbuf, m, xw, goff, rows, n, c, hc, blk0, blk1)


@njit(inline="always")
def copy_floats(src, soff, dst, doff, n):
    """dst[doff : doff+n] = src[soff : soff+n] (float32 pointers), 16 lanes at a time."""
    full = n - n % 16
    for k in range(0, full, 16):
        vstore(dst, doff + k, vload(src, soff + k))
    if full < n:
        vstore_n(dst, doff + full, vload_n(src, soff + full, n - full), n - full)


@njit(inline="always")
def emit_rows(wbuf, m, hc, rows, n, h):
    """h[r] (Hout,) = hc[r, :H] without a projection, proj (Hout, H) @ hc[r, :H] with one."""
    H, Hout = m[M_H], m[M_HOUT]
    if m[M_PROJ] < 0:
        src, dst = fptr(hc), fptr(h)
        for j in range(n):
            copy_floats(src, rows[j] * hc.shape[1], dst, rows[j] * Hout, H)
        return
    proj = wbuf[m[M_PROJ] : m[M_PROJ] + Hout * H].reshape((Hout, H))
    for j in range(n):
        r = rows[j]
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


@njit(inline="always")
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


@njit(inline="always")
def emit_y(h, rows, times, n, y):
    """y[times[j], rows[j]] = h[rows[j]] for the n rows active at this step. y may be a strided view (one
    direction's slice of the output) but its rows must be contiguous (run_tables checks it)."""
    src, dst = fptr(h), fptr_strided(y)
    Hout, st, sb = h.shape[1], y.strides[0] // 4, y.strides[1] // 4
    for j in range(n):
        copy_floats(src, rows[j] * Hout, dst, times[j] * st + rows[j] * sb, Hout)


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


@njit(inline="always")
def run_tables(m, xw, y):
    """The run drivers' per-call work arrays: rows, goff, times (B,) int64 for active_rows and hc (B, Hp);
    and the one check of y's layout that emit_y relies on."""
    if y.strides[2] != 4:
        raise ValueError("run: y's last axis must be contiguous float32")
    B = xw.shape[1]
    hc = np.zeros((B, m[M_NBLK] * BLOCK), np.float32)
    return np.empty(B, np.int64), np.empty(B, np.int64), np.empty(B, np.int64), hc


@njit(**JIT)
def run_serial(wbuf, m, xw, lens, h, c, y):
    """One layer-direction over the sequence on the calling thread, from xw (T, B, 4Hp) (consumed)."""
    reverse = m[M_REVERSE] != 0
    rows, goff, times, hc = run_tables(m, xw, y)
    for step in range(xw.shape[0]):
        n = active_rows(step, lens, reverse, xw.shape[2], rows, goff, times)
        if n == 0:
            break  # row_time is -1 for every later step too
        recur_blocks(wbuf, m, xw, goff, rows, n, h, c, hc, 0, m[M_NBLK], step % 2 == 1)
        emit_rows(wbuf, m, hc, rows, n, h)
        emit_y(h, rows, times, n, y)
    finish(lens, h, c, y)


@njit(**JIT_PARALLEL)
def run_parallel(wbuf, m, xw, lens, h, c, y, threads):
    """run_serial with each time step's blocks split over `threads` threads (one parallel region per
    step; the caller passes numba.get_num_threads(), reading it here would defeat the cache)."""
    reverse = m[M_REVERSE] != 0
    nblk = m[M_NBLK]
    nth = max(1, min(threads, nblk))
    rows, goff, times, hc = run_tables(m, xw, y)
    for step in range(xw.shape[0]):
        n = active_rows(step, lens, reverse, xw.shape[2], rows, goff, times)
        if n == 0:
            break
        for tid in prange(nth):
            recur_blocks(wbuf, m, xw, goff, rows, n, h, c, hc, tid * nblk // nth, (tid + 1) * nblk // nth,
                         step % 2 == 1)
        emit_rows(wbuf, m, hc, rows, n, h)
        emit_y(h, rows, times, n, y)
    finish(lens, h, c, y)


@njit(**JIT)
def scratch_floats(nblk, batch):
    """Floats of step scratch for `batch` rows (layout in step_views): gates (4Hp) + hc (Hp) per row,
    then int64 tables of `batch` entries twice and the sweep counter (2 floats per int64)."""
    return 5 * batch * nblk * BLOCK + 4 * batch + 2


@njit(**JIT)
def step_fits(meta, x, h, c, scratch):
    """True when the arrays have the shapes the step kernels index by: a forward-only stack of
    meta.shape[0] layers, h (L, 1, B, Hout), c (L, 1, B, H), x (B*I0,), scratch >= scratch_size.
    Checked here, in nanoseconds, so that step()'s Python side checks nothing on the common path."""
    L, B = meta.shape[0], h.shape[2]
    H, Hout, I0, nblk = meta[0, M_H], meta[0, M_HOUT], meta[0, M_I], meta[0, M_NBLK]
    for l in range(L):
        if meta[l, M_REVERSE] != 0:
            return False
    return (h.shape[0] == L and h.shape[1] == 1 and h.shape[3] == Hout
            and c.shape[0] == L and c.shape[1] == 1 and c.shape[2] == B and c.shape[3] == H
            and x.shape[0] == B * I0 and scratch.shape[0] >= scratch_floats(nblk, B))


@njit(**JIT)
def step_views(meta, h, scratch):
    """step()'s scratch as gates (B, 4Hp), hc (B, Hp), the all-rows tables rows = 0..B-1 and
    goff = rows * 4Hp (int64, in the scratch too: a step allocates nothing), and whether this step sweeps
    the blocks down (it alternates from call to call: see serpentine)."""
    B = h.shape[2]
    Hp = meta[0, M_NBLK] * BLOCK  # every layer has the same H
    gates = scratch[: B * 4 * Hp].reshape((B, 4 * Hp))
    hc = scratch[B * 4 * Hp : B * 5 * Hp].reshape((B, Hp))
    ints = scratch[B * 5 * Hp : B * 5 * Hp + 4 * B + 2].view(np.int64)  # Hp is even: 8-byte aligned
    rows, goff = ints[:B], ints[B : 2 * B]
    for r in range(B):
        rows[r], goff[r] = r, r * 4 * Hp
    ints[2 * B] = 1 if ints[2 * B] == 0 else 0  # any start will do: the order never changes a result
    return gates, hc, rows, goff, ints[2 * B] == 1


# Blocks per unit of the step's sweep: a unit projects its blocks (W) and then steps them (R), so the
# weights of a block are read together and a down sweep meets them in reverse order of last use.
STEP_CHUNK = 2


@njit(**JIT)
def step_layer(wbuf, meta, l, x, h, c, gates, hc, rows, goff, blk0, blk1, down):
    """Blocks blk0..blk1 of layer l for every row: gates = b + W @ input (x for layer 0, else layer l-1's
    new h), then R @ h and the cell, STEP_CHUNK blocks at a time, the chunks swept down when `down`.
    h and c are the whole stack's (L, 1, B, *) state."""
    m = meta[l]
    B = h.shape[2]
    chunks = (blk1 - blk0 + STEP_CHUNK - 1) // STEP_CHUNK
    for i in range(chunks):
        b0 = blk0 + serpentine(i, 0, chunks, down) * STEP_CHUNK
        b1 = min(b0 + STEP_CHUNK, blk1)
        if l == 0:
            project_rows(wbuf, m, x, gates, rows, goff, B, b0, b1, down)
        else:
            project_rows(wbuf, m, h[l - 1, 0], gates, rows, goff, B, b0, b1, down)
        recur_blocks(wbuf, m, gates, goff, rows, B, h[l, 0], c[l, 0], hc, b0, b1, down)


@njit(**JIT)
def step_stack(wbuf, meta, x, h, c, scratch):
    """One frame through every layer (one direction each) for B rows; the whole step in one call.

    x (B*I0,) frames   h (L, 1, B, Hout)   c (L, 1, B, H)   advanced in place
    scratch (>= scratch_floats) float32. Layer l reads layer l-1's new h as its input. The
    output is the last layer's new h (the caller copies h[L-1, 0]). Returns False, touching nothing,
    when the shapes do not fit (step_fits)."""
    if not step_fits(meta, x, h, c, scratch):
        return False
    gates, hc, rows, goff, down = step_views(meta, h, scratch)
    for l in range(meta.shape[0]):
        step_layer(wbuf, meta, l, x, h, c, gates, hc, rows, goff, 0, meta[l, M_NBLK], down)
        emit_rows(wbuf, meta[l], hc, rows, h.shape[2], h[l, 0])
    return True


@njit(**JIT)
def step_one(wbuf, meta, x, h, c, scratch):
    """step_stack for exactly one stream, x (I0,) and h (L, 1, 1, Hout): the closed fast path of
    step() (fastcall.py). False, touching nothing, for any other shapes."""
    if h.shape[2] != 1:
        return False
    return step_stack(wbuf, meta, x, h, c, scratch)


@njit(**JIT_PARALLEL)
def step_parallel(wbuf, meta, x, h, c, scratch, threads):
    """step_stack with each layer's blocks split over `threads` threads (one parallel region per layer:
    a thread projects and steps its own blocks). Same per-block arithmetic: bit-identical."""
    if not step_fits(meta, x, h, c, scratch):
        return False
    gates, hc, rows, goff, down = step_views(meta, h, scratch)
    for l in range(meta.shape[0]):
        nblk = meta[l, M_NBLK]
        nth = max(1, min(threads, nblk))
        for tid in prange(nth):
            step_layer(wbuf, meta, l, x, h, c, gates, hc, rows, goff, tid * nblk // nth, (tid + 1) * nblk // nth,
                       down)
        emit_rows(wbuf, meta[l], hc, rows, h.shape[2], h[l, 0])
    return True


def scratch_size(meta, batch: int) -> int:
    """Floats of scratch step_stack / step_parallel need for `batch` rows (scratch_floats; every layer
    has the same H)."""
    return int(scratch_floats(meta[0, M_NBLK], batch))
