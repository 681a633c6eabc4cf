"""run(): one layer-direction over a whole sequence, as a team program (team.py).

Shapes (one layer-direction; Hp = blocks * LANES, G = 4 * LANES, S = layout.out_stride):
    x      (T*B, I)        input rows, time-major                                         (call.x)
    y      (T, B, D*Hout)  outputs, this direction at columns d*Hout..; rows past a sequence's
                           length end as 0                                                  (call.y)
    state  h (L, D, B, Hout), c (L, D, B, H) at the front of the state buffer              (call.state)
    lens   (B,) int64      valid steps per batch row                                        (call.lens)
    work   xw (T*B, 4Hp)   gate pre-activations b + x Wp, consumed by the recurrence        (call.work)
           hbuf (2, B, S)  h of the previous and the current step (they alternate)
           hc (B, Hp)      o * h(c) before the projection (projection models only)

Phases: 0 = the input projection for all T*B rows (parts = ranges of blocks); then per time step s the
recurrence (parts = ranges of blocks: R h + the cell for the rows active at s, which write c, their new h
and y), and with a projection one more phase (parts = ranges of output blocks: h = P hc). Every phase
writes only its own parts' outputs, every output element is one FMA chain (tiles.py), so the result does
not depend on the team size or on which thread ran a part. The master (tid 0) copies the final h out.
"""

import numpy as np
from numba import njit

from .cell import general_rows
from .config import JIT
from .gemm import cell_of, inputs, no_cell, product, sums_at, tiling_of, weights
from .layout import out_stride
from .simd import fptr, iptr, keep, vload, vload_n, vstore, vstore_n, wpointer
from .target import LANES
from .team import mine, part_of, phase_end, ran, share

G = 4 * LANES


@njit(inline="always")
def row_time(step, length, reverse):
    """The time index a row of valid length `length` processes at `step`, or -1 once it is done."""
    if step >= length:
        return -1
    return length - 1 - step if reverse else step


@njit(inline="always")
def active_rows(step, lens, B, reverse, gate_row, rows, goff, times):
    """Compact the rows active at `step` into rows/times/goff (goff = offset of xw[t, r]); their count."""
    n = 0
    for r in range(B):
        t = row_time(step, lens[r], reverse)
        if t >= 0:
            rows[n], times[n], goff[n] = r, t, (t * B + r) * gate_row
            n += 1
    return n


@njit(**JIT)
def copy_floats(src, soff, dst, doff, n):
    """dst[doff : doff+n] = src[soff : soff+n] (float32 pointers), LANES at a time."""
    full = n - n % LANES
    for k in range(0, full, LANES):
        vstore(dst, doff + k, vload(src, soff + k))
    if full < n:
        vstore_n(dst, doff + full, vload_n(src, soff + full, n - full), n - full)


@njit(inline="always")
def emit_y(call, h, h_base, S, rows, times, n, col0, col1, y_row, y_col):
    """y[t, r, y_col + col0 : y_col + col1] = h[h_base + r*S + col0 : ...] for the n active rows."""
    for j in range(n):
        r = rows[j]
        copy_floats(h, h_base + r * S + col0, call.y, (times[j] * call.B + r) * y_row + y_col + col0, col1 - col0)


@njit(inline="always")
def run_phases(layers, row, lens, B):
    """How many phases run_direction has: the projection, then per step with an active row the
    recurrence (and the projection of h)."""
    m = layers[row]
    steps = 0
    for r in range(B):
        steps = max(steps, lens[r])
    return 1 + steps * (2 if m.proj_slabs >= 0 else 1)


@njit(inline="always")
def work_floats(m, T, B):
    """Floats of run_direction's work buffer: xw, hbuf, hc."""
    Hp = m.blocks * LANES
    return T * B * 4 * Hp + 2 * B * out_stride(m.hidden, m.output, m.proj_slabs >= 0) + B * Hp


@njit(inline="always")
def load_h(m, call, h_of):
    """hbuf[0] = the state's h of this layer-direction (before the team starts)."""
    S = out_stride(m.hidden, m.output, m.proj_slabs >= 0)
    hbuf = call.T * call.B * 4 * m.blocks * LANES
    for r in range(call.B):
        copy_floats(call.state, h_of + r * m.output, call.work, hbuf + r * S, m.output)


@njit(**JIT)
def run_direction(wbuf, layers, variant, ctl, call):
    """This participant's parts of one layer-direction's run (see the module docstring)."""
    m = layers[call.row]
    w, wq, work, T, B = fptr(wbuf), wpointer(wbuf, variant), call.work, call.T, call.B
    I, H, Hout, nblk, D = m.input_size, m.hidden, m.output, m.blocks, m.directions
    Hp = nblk * LANES
    gate_row = 4 * Hp
    has_proj = m.proj_slabs >= 0
    S = out_stride(H, Hout, has_proj)
    hbuf = T * B * gate_row
    hc_of = hbuf + 2 * B * S
    c_of = c_start(layers, B) + call.row * B * H  # c of this layer-direction in the state buffer
    tiling = tiling_of(m)
    fuse = m.default_cell != 0
    y_row, y_col = D * Hout, (call.row % D) * Hout

    per_step = 2 if has_proj else 1
    if call.start == 0:  # phase 0: xw = b + x @ W for every row
        N = T * B
        all_rows, offsets = np.empty(N, np.int64), np.empty(N, np.int64)  # (loops, not array expressions:
        for r in range(N):  # each numpy ufunc in a kernel compiles its own loop on first use)
            all_rows[r], offsets[r] = r, r * gate_row
        for i in range(call.team):
            p = part_of(call, i)
            if mine(ctl, call, p, 0):
                b0, b1 = share(p, call.team, nblk)
                product(weights(wq, m.w_slabs, I, w, m.w_scales), inputs(call.x, 0, I, iptr(all_rows)), N,
                        sums_at(work, iptr(offsets), m.bias, w), b0, b1, False, no_cell(work), tiling)
                ran(ctl, call)
        phase_end(ctl, call, 0)
        keep(all_rows)
        keep(offsets)

    rows, goff, times, hoff = np.empty(B, np.int64), np.empty(B, np.int64), np.empty(B, np.int64), np.empty(B, np.int64)
    first = max(call.start - 1, 0) // per_step  # a late worker starts at the master's step
    k = 1 + first * per_step
    for s in range(first, T):
        n = active_rows(s, call.lens, B, m.reverse != 0, gate_row, rows, goff, times)
        if n == 0:
            break  # row_time is -1 for every later step too
        h_in, h_out = hbuf + (s % 2) * B * S, hbuf + ((s + 1) % 2) * B * S
        down = s % 2 == 1  # serpentine: sweep the blocks the other way on every other step
        target, t_stride = (hc_of, Hp) if has_proj else (h_out, S)
        for i in range(call.team):
            p = part_of(call, i)
            if mine(ctl, call, p, k):
                b0, b1 = share(p, call.team, nblk)
                product(weights(wq, m.r_slabs, Hout, w, m.r_scales), inputs(work, h_in, S, iptr(rows)), n,
                        sums_at(work, iptr(goff), -1, w), b0, b1, down,
                        cell_of(fuse, call.state, c_of, H, work, target, t_stride, H), tiling)
                if (variant.ndim == 2 or variant.ndim == 4) and not fuse:  # (else no general cell: never compiled)
                    general_rows(wbuf, m, work, iptr(goff), iptr(rows), n, call.state, c_of, work, target, t_stride,
                                 b0, b1)
                if not has_proj:
                    emit_y(call, work, h_out, S, rows, times, n, b0 * LANES, min(b1 * LANES, H), y_row, y_col)
                ran(ctl, call)
        phase_end(ctl, call, k)
        k += 1
        if has_proj:
            for j in range(n):
                hoff[j] = h_out + rows[j] * S
            for i in range(call.team):
                p = part_of(call, i)
                if mine(ctl, call, p, k):
                    b0, b1 = share(p, call.team, m.proj_blocks)
                    product(weights(w, m.proj_slabs, H, w, -1), inputs(work, hc_of, Hp, iptr(rows)), n,
                            sums_at(work, iptr(hoff), m.proj_zero, w), b0, b1, down, no_cell(work), tiling)
                    emit_y(call, work, h_out, S, rows, times, n, b0 * G, min(b1 * G, Hout), y_row, y_col)
                    ran(ctl, call)
            phase_end(ctl, call, k)
            k += 1
    keep(rows)
    keep(goff)
    keep(times)
    keep(hoff)


@njit(inline="always")
def c_start(layers, B):
    """Floats of h (L, D, B, Hout) at the front of a state buffer: where c starts."""
    m = layers[0]
    return layers.shape[0] * B * m.output


@njit(inline="always")
def finish_direction(layers, call):
    """After the last phase (master): the final h of each row (taken at its last valid step), and ONNX's
    zeros: outputs past each row's length, and the whole state of a length-0 row."""
    m = layers[call.row]
    T, B, H, Hout, D = call.T, call.B, m.hidden, m.output, m.directions
    S = out_stride(H, Hout, m.proj_slabs >= 0)
    hbuf = T * B * 4 * m.blocks * LANES
    h_of, c_of = call.row * B * Hout, c_start(layers, B) + call.row * B * H
    y_row, y_col = D * Hout, (call.row % D) * Hout
    for r in range(B):
        length = call.lens[r]
        if length == 0:
            for u in range(Hout):
                call.state[h_of + r * Hout + u] = 0.0
            for u in range(H):
                call.state[c_of + r * H + u] = 0.0
        else:
            copy_floats(call.work, hbuf + (length % 2) * B * S + r * S, call.state, h_of + r * Hout, Hout)
        for t in range(length, T):
            base = (t * B + r) * y_row + y_col
            for u in range(Hout):
                call.y[base + u] = 0.0
