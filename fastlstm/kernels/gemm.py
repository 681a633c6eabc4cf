"""gates_add: start + inputs @ slabs for a range of blocks and a set of input rows, cache blocked, on the
plan's register tiles; the result is stored, or goes straight through the fused LSTM cell.

Arguments travel as named tuples of pointers and sizes (see the constructors below):
    Weights(w, slabs, K, f, scales)
                                slab of block b at w[slabs + b*K*G : ...], (K, G) k-major (tiles.py); w is
                                a pointer of the stored weight type (simd.wpointer), slabs counts its
                                elements; int8 row scales at f[scales + b*G ...] (f: wbuf as floats)
    Inputs(v, base, stride, rows)
                                input row j is v[base + rows[j]*stride : +K]
    Sums(out, offsets, bias, f) row j's G-float gate vector of block b at out[offsets[j] + b*G]; the chains
                                start from f[bias + b*G ...] when bias >= 0, else from what `out` holds
    Cell(fuse, c, c_base, c_stride, hc, hc_base, hc_stride, H)
                                fuse: the default cell runs on the finished sums in registers (c and hc of
                                input row r = rows[j] updated at c[c_base + r*c_stride ...], hc[hc_base +
                                r*hc_stride ...]; the sums are never stored); else the sums are stored
    Tiling(panel_rows)          cache blocking (tuning.py)
Every field is a plain (non-literal) int64 / bool / pointer, so all call sites share one compiled copy.

Summation (config.K_PIECE): k goes in pieces of K_PIECE; each piece is a chain from 0 (tiles.py) whose sum
is added once to the running value: the start (bias, or what `out` holds), then each piece in order. int8
weights enter the chains as float(q); a piece's sum is scaled by its rows' scales in that one addition
(an FMA: a + s * p; with s = 1 for the other types it is exactly a + p). A
running value waits in `out` between pieces as the float32 it is in a register, so where a piece is
computed (a tile, a lone row, another thread) changes no bit.

Cache blocking: rows go in panels of panel_rows (their inputs stay in L2 while every block passes over
them) and, inside a block, one piece of k at a time (that piece of the slab stays in L1 while every tile of
the panel uses it). Leftover rows (fewer than a tile) go one at a time, two blocks at a time.
"""

from collections import namedtuple

import numpy as np
from numba import njit
from numba.extending import overload

from .cell import update_fast
from .config import JIT, K_PIECE
from .simd import FloatPtr, is_scaled, stack_floats, vfma, vload, vsplat, vstore, wload
from .target import LANES
from .tiles import G, gemm_2row, gemm_4row, gemm_6row, gemv_1blk, gemv_2blk

Weights = namedtuple("Weights", "w slabs K f scales")
Inputs = namedtuple("Inputs", "v base stride rows")
Sums = namedtuple("Sums", "out offsets bias f")
Cell = namedtuple("Cell", "fuse c c_base c_stride hc hc_base hc_stride H")
Tiling = namedtuple("Tiling", "panel_rows")
PIECE_FLOATS = K_PIECE * G  # the stack buffer of one dequantized slab piece


@njit(inline="always")
def weights(w, slabs, K, f, scales):
    return Weights(w, np.int64(slabs), np.int64(K), f, np.int64(scales))


@njit(inline="always")
def inputs(v, base, stride, rows):
    return Inputs(v, np.int64(base), np.int64(stride), rows)


@njit(inline="always")
def sums_at(out, offsets, bias, f):
    return Sums(out, offsets, np.int64(bias), f)


@njit(inline="always")
def cell_of(fuse, c, c_base, c_stride, hc, hc_base, hc_stride, H):
    return Cell(np.bool_(fuse), c, np.int64(c_base), np.int64(c_stride), hc, np.int64(hc_base),
                np.int64(hc_stride), np.int64(H))


@njit(inline="always")
def no_cell(out):
    """The store epilogue (a dense product, or gate sums kept for the general cell)."""
    return cell_of(False, out, 0, 0, out, 0, 0, 0)


@njit(inline="always")
def tiling_of(m):
    """The cache blocking of a plan record (layout.LAYER)."""
    return Tiling(np.int64(m.panel_rows))


@njit(inline="always")
def serpentine(i, lo, hi, down):
    """The i-th of lo..hi-1, counted from hi-1 when `down`: drivers sweep the blocks up on one step and
    down on the next, so the weights the last sweep touched (still in L1/L2) are read first."""
    return hi - 1 - i if down else lo + i


@njit(**JIT)
def block_start(sums, o, blk):
    """A block's starting gate vectors for one row: the bias, or the value in out[o:]."""
    if sums.bias >= 0:
        f, off = sums.f, sums.bias + blk * G
        return vload(f, off), vload(f, off + LANES), vload(f, off + 2 * LANES), vload(f, off + 3 * LANES)
    out = sums.out
    return vload(out, o), vload(out, o + LANES), vload(out, o + 2 * LANES), vload(out, o + 3 * LANES)


@njit(**JIT)
def block_done(sums, o, a0, a1, a2, a3, cell, r, blk):
    """A block's finished sums for input row r: through the fused cell, or stored at out[o:]."""
    if cell.fuse:
        unit0 = blk * LANES
        update_fast(a0, a1, a2, a3, cell.c, cell.c_base + r * cell.c_stride + unit0, min(LANES, cell.H - unit0),
                    cell.hc, cell.hc_base + r * cell.hc_stride + unit0)
    else:
        out = sums.out
        vstore(out, o, a0)
        vstore(out, o + LANES, a1)
        vstore(out, o + 2 * LANES, a2)
        vstore(out, o + 3 * LANES, a3)


@njit(inline="always")
def add_scaled(a, p, s):
    """a + s * p for 4 vectors, each lane rounded once (an FMA): a piece's sums p added to the running value a
    with the row scales s (int8 weights; ones otherwise, and fma(1, p, a) is exactly a + p)."""
    return vfma(s[0], p[0], a[0]), vfma(s[1], p[1], a[1]), vfma(s[2], p[2], a[2]), vfma(s[3], p[3], a[3])


@njit(**JIT)
def add_piece(sums, o, piece, k0, partial, cell, r, blk, s):
    """A tile row's piece sums (4 vectors) added, times the row scales s, to its running value (the start at
    k0 = 0, else what out[o:] holds): parked in out[o:] when more pieces follow, else block_done."""
    a0, a1, a2, a3 = add_scaled(tile_start(sums, k0, o, blk), piece, s)
    if partial:
        out = sums.out
        vstore(out, o, a0)
        vstore(out, o + LANES, a1)
        vstore(out, o + 2 * LANES, a2)
        vstore(out, o + 3 * LANES, a3)
    else:
        block_done(sums, o, a0, a1, a2, a3, cell, r, blk)


@njit(inline="always")
def zeros4():
    """Four zero vectors: the start of every piece's chains (one row of one block)."""
    z = vsplat(0.0)
    return z, z, z, z


@njit(inline="always")
def zeros8():
    return (*zeros4(), *zeros4())


@njit(inline="always")
def zeros16():
    return (*zeros8(), *zeros8())


@njit(inline="always")
def zeros24():
    return (*zeros16(), *zeros8())


@njit(**JIT)
def tile_start(sums, k0, o, blk):
    """Starting vectors of a tile row for the piece at k0: the block's start, or the parked partial sums."""
    if k0 == 0:
        return block_start(sums, o, blk)
    out = sums.out
    return vload(out, o), vload(out, o + LANES), vload(out, o + 2 * LANES), vload(out, o + 3 * LANES)


# ---- row tiles: one per plan (only the plan's own tiles are ever compiled) ----------------------------------
@njit(**JIT)
def tile_2rows(w, slab, kn, k0, src, j, sums, blk, partial, cell, scale):
    """Rows j, j+1 of block blk over k = k0..k0+kn (gemm_2row)."""
    o0, o1 = sums.offsets[j] + blk * G, sums.offsets[j + 1] + blk * G
    r0, r1 = src.rows[j], src.rows[j + 1]
    st, b = src.stride, src.base + k0
    s = gemm_2row(w, slab, kn, src.v, b + r0 * st, b + r1 * st, zeros8())
    add_piece(sums, o0, s[0:4], k0, partial, cell, r0, blk, scale)
    add_piece(sums, o1, s[4:8], k0, partial, cell, r1, blk, scale)


@njit(**JIT)
def tile_4rows(w, slab, kn, k0, src, j, sums, blk, partial, cell, scale):
    """Rows j..j+3 of block blk over k = k0..k0+kn (gemm_4row)."""
    o0, o1 = sums.offsets[j] + blk * G, sums.offsets[j + 1] + blk * G
    o2, o3 = sums.offsets[j + 2] + blk * G, sums.offsets[j + 3] + blk * G
    r0, r1, r2, r3 = src.rows[j], src.rows[j + 1], src.rows[j + 2], src.rows[j + 3]
    st, b = src.stride, src.base + k0
    s = gemm_4row(w, slab, kn, src.v, b + r0 * st, b + r1 * st, b + r2 * st, b + r3 * st, zeros16())
    add_piece(sums, o0, s[0:4], k0, partial, cell, r0, blk, scale)
    add_piece(sums, o1, s[4:8], k0, partial, cell, r1, blk, scale)
    add_piece(sums, o2, s[8:12], k0, partial, cell, r2, blk, scale)
    add_piece(sums, o3, s[12:16], k0, partial, cell, r3, blk, scale)


@njit(**JIT)
def tile_6rows(w, slab, kn, k0, src, j, sums, blk, partial, cell, scale):
    """Rows j..j+5 of block blk over k = k0..k0+kn (gemm_6row)."""
    off = sums.offsets
    o0, o1, o2 = off[j] + blk * G, off[j + 1] + blk * G, off[j + 2] + blk * G
    o3, o4, o5 = off[j + 3] + blk * G, off[j + 4] + blk * G, off[j + 5] + blk * G
    rw = src.rows
    r0, r1, r2, r3, r4, r5 = rw[j], rw[j + 1], rw[j + 2], rw[j + 3], rw[j + 4], rw[j + 5]
    st, b = src.stride, src.base + k0
    s = gemm_6row(w, slab, kn, src.v, b + r0 * st, b + r1 * st, b + r2 * st, b + r3 * st, b + r4 * st,
                  b + r5 * st, zeros24())
    add_piece(sums, o0, s[0:4], k0, partial, cell, r0, blk, scale)
    add_piece(sums, o1, s[4:8], k0, partial, cell, r1, blk, scale)
    add_piece(sums, o2, s[8:12], k0, partial, cell, r2, blk, scale)
    add_piece(sums, o3, s[12:16], k0, partial, cell, r3, blk, scale)
    add_piece(sums, o4, s[16:20], k0, partial, cell, r4, blk, scale)
    add_piece(sums, o5, s[20:24], k0, partial, cell, r5, blk, scale)


@njit(inline="always")
def split_wide(n):
    """AVX-512: rows 0..n6 in 6-row tiles, the next n4 in 4-row tiles, 0 or 1 left over (2 or 3 when n < 4).
    Trading one 6-row tile for 4-row ones avoids 2-3 leftovers (B = 8: 4 + 4, not 6 + 1 + 1)."""
    n6 = n - n % 6
    if n - n6 in (2, 3) and n6 >= 6:
        n6 -= 6
    return n6, (n - n6) - (n - n6) % 4


@njit(**JIT)
def panel_tiles_wide(w, slab, kn, k0, src, p0, p1, n_tall, sums, blk, partial, cell, scale):
    """AVX-512 plan: the rows p0..p1 of a panel in 6-row tiles up to n_tall, then 4-row tiles."""
    for j in range(p0, min(p1, n_tall), 6):
        tile_6rows(w, slab, kn, k0, src, j, sums, blk, partial, cell, scale)
    for j in range(max(p0, n_tall), p1, 4):
        tile_4rows(w, slab, kn, k0, src, j, sums, blk, partial, cell, scale)


@njit(inline="always")
def split_narrow(n):
    """AVX2 plan: rows in 2-row tiles, 0 or 1 left over."""
    return n - n % 2, 0


@njit(**JIT)
def panel_tiles_narrow(w, slab, kn, k0, src, p0, p1, n_tall, sums, blk, partial, cell, scale):
    """AVX2 plan: the rows p0..p1 of a panel in 2-row tiles."""
    for j in range(p0, p1, 2):
        tile_2rows(w, slab, kn, k0, src, j, sums, blk, partial, cell, scale)


if LANES == 16:
    split_rows, panel_tiles = split_wide, panel_tiles_wide
else:
    split_rows, panel_tiles = split_narrow, panel_tiles_narrow


@njit(**JIT)
def block_scales(wt, blk):
    """The four row-scale vectors of block blk (int8 weights), or ones (the other types ignore them)."""
    if is_scaled(wt.w):
        off = wt.scales + blk * G
        f = wt.f
        return vload(f, off), vload(f, off + LANES), vload(f, off + 2 * LANES), vload(f, off + 3 * LANES)
    one = vsplat(1.0)
    return one, one, one, one


def tile_source(w, slab, kn, s, piece):
    """(float32 pointer, offset) of the (kn, G) slab piece at w[slab:] for the fp32 GEMM tiles."""


@overload(tile_source, jit_options=JIT)
def _tile_source(w, slab, kn, s, piece):
    if w == FloatPtr:
        return lambda w, slab, kn, s, piece: (w, slab)  # fp32 weights: read in place

    def dequantized(w, slab, kn, s, piece):  # other types: widened once into an L1 buffer (int8 unscaled:
        dst = piece  # the scales come with add_piece), then every tile of the panel reads fp32 from there
        for k in range(kn * 4):
            vstore(dst, k * LANES, wload(w, slab + k * LANES))
        return dst, np.int64(0)

    return dequantized


@njit(**JIT)
def tile_pass(wt, src, n_tall, tiled, sums, blk0, blk1, down, cell, tiling, piece):
    """The rows 0..tiled in register tiles: panels of rows, blocks, pieces of k (the module docstring)."""
    p0 = np.int64(0)
    while p0 < tiled:  # the last panel takes the short tiles too: one more sweep over the blocks would
        p1 = p0 + tiling.panel_rows if p0 + tiling.panel_rows < n_tall else tiled  # stream R again each step
        for i in range(blk1 - blk0):
            blk = serpentine(i, blk0, blk1, down)
            s = block_scales(wt, blk)
            for k0 in range(0, wt.K, K_PIECE):
                kn = min(K_PIECE, wt.K - k0)
                w, slab = tile_source(wt.w, wt.slabs + (blk * wt.K + k0) * G, kn, s, piece)
                panel_tiles(w, slab, kn, k0, src, p0, p1, n_tall, sums, blk, k0 + kn < wt.K, cell, s)
        p0 = p1


@njit(**JIT)
def gates_add(wt, src, then, then_src, n, sums, blk0, blk1, down, cell, tiling):
    """Sums of blocks blk0..blk1 for the n rows j: start + v[rows[j]] @ slab (+ v2[rows[j]] @ slab2 when
    then.K > 0: step's W x then R h), every (row, block) pair one FMA chain over k (tiles.py) that goes on
    from the first product into the second, then block_done. `down` sweeps the blocks from blk1-1 down (the
    order of blocks changes which weights are cached, never a result).

    One row alone (a single stream's step) runs both products in registers and goes straight into the
    cell; rows in tiles finish the first product for every block (stored in out, as the float32 the
    register holds: the same bits) before the second. run() computes its first product for the whole
    sequence ahead (then.K = 0): the same chains, so step == run bit for bit."""
    n_tall, n_short = split_rows(n)
    tiled = n_tall + n_short
    if tiled > 0:
        piece = stack_floats(PIECE_FLOATS)  # a dequantized slab piece (unused for fp32), on the stack
        if then.K > 0:
            tile_pass(wt, src, n_tall, tiled, sums, blk0, blk1, down, no_cell(sums.out), tiling, piece)
            tile_pass(then, then_src, n_tall, tiled, Sums(sums.out, sums.offsets, np.int64(-1), sums.f), blk0, blk1,
                      down, cell, tiling, piece)
        else:
            tile_pass(wt, src, n_tall, tiled, sums, blk0, blk1, down, cell, tiling, piece)
    # leftover rows one at a time: two blocks per pass (8 chains in flight)
    width = 2
    slots = (blk1 - blk0 + width - 1) // width
    for j in range(tiled, n):
        r = src.rows[j]
        voff, voff2 = src.base + r * src.stride, then_src.base + r * then_src.stride
        for p in range(slots):
            blk = blk0 + width * serpentine(p, 0, slots, down)
            o0 = sums.offsets[j] + blk * G
            a = block_start(sums, o0, blk)
            if width == 2 and blk + 1 < blk1:
                both = pieces_2blk(wt, blk, src.v, voff, (*a, *block_start(sums, o0 + G, blk + 1)))
                if then.K > 0:
                    both = pieces_2blk(then, blk, then_src.v, voff2, both)
                block_done(sums, o0, both[0], both[1], both[2], both[3], cell, r, blk)
                block_done(sums, o0 + G, both[4], both[5], both[6], both[7], cell, r, blk + 1)
            else:
                a = pieces_1blk(wt, blk, src.v, voff, a)
                if then.K > 0:
                    a = pieces_1blk(then, blk, then_src.v, voff2, a)
                block_done(sums, o0, a[0], a[1], a[2], a[3], cell, r, blk)


@njit(**JIT)
def pieces_1blk(wt, blk, v, voff, a):
    """a (4 vectors) + slab of block blk @ v[voff : voff+K], piece by piece (a chain from 0 per piece)."""
    s = block_scales(wt, blk)
    slab = wt.slabs + blk * wt.K * G
    for k0 in range(0, wt.K, K_PIECE):
        a = add_scaled(a, gemv_1blk(wt.w, slab + k0 * G, min(K_PIECE, wt.K - k0), v, voff + k0, *zeros4()), s)
    return a


@njit(**JIT)
def pieces_2blk(wt, blk, v, voff, a):
    """pieces_1blk for blocks blk and blk + 1 at once (a: 8 vectors, block blk's first)."""
    a0, a1, a2, a3, b0, b1, b2, b3 = a
    s, t = block_scales(wt, blk), block_scales(wt, blk + 1)
    slab, slab2 = wt.slabs + blk * wt.K * G, wt.slabs + (blk + 1) * wt.K * G
    for k0 in range(0, wt.K, K_PIECE):
        d = gemv_2blk(wt.w, slab + k0 * G, slab2 + k0 * G, min(K_PIECE, wt.K - k0), v, voff + k0, *zeros8())
        a0, a1, a2, a3 = add_scaled((a0, a1, a2, a3), d[0:4], s)
        b0, b1, b2, b3 = add_scaled((b0, b1, b2, b3), d[4:8], t)
    return a0, a1, a2, a3, b0, b1, b2, b3


@njit(inline="always")
def product(wt, src, n, sums, blk0, blk1, down, cell, tiling):
    """One product (gates_add without a second), with its counts and flags as plain int64 / bool: a constant
    argument would be typed as a literal and compile another copy of gates_add (seconds of first-ever compile
    each)."""
    gates_add(wt, src, Weights(wt.w, wt.slabs, np.int64(0), wt.f, wt.scales), src, np.int64(n), sums,
              np.int64(blk0), np.int64(blk1), np.bool_(down), cell, tiling)


@njit(inline="always")
def products(wt, src, then, then_src, n, sums, blk0, blk1, down, cell, tiling):
    """gates_add of two products in one chain (step: W x then R h), plain-typed like product()."""
    gates_add(wt, src, then, then_src, np.int64(n), sums, np.int64(blk0), np.int64(blk1), np.bool_(down), cell,
              tiling)
