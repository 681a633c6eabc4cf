"""step(): one frame through every layer of a forward-only stack for B streams, as a team program.

A whole model's step adds one phase when its head starts with a big Linear (model.head_phase_of): parts =
ranges of the Linear's output blocks, from the last layer's new h into the layers' work buffer (call.work).

State buffer (layout.py): h (L, 1, B, Hout), c (L, 1, B, H), then the step scratch hc (L, B, Hp),
hnew (L, B, S), gates (B, 4Hp) and the int64 tables rows (B,) = 0..B-1 and goff (B,) (row j's gate vector
in `gates`), filled by the master before the team starts.

Phases: per layer l the recurrence (parts = ranges of blocks: gates = b + W input + R h[l] in one chain per
gate (gemm.gates_add's two products), then the cell:
c[l] and layer l's new h (or hc before the projection) for the part's units), and with a projection one
more phase (parts = ranges of output blocks: hnew = P hc). Layer l's input is the frame (l = 0) or layer
l-1's new h; R reads the state's h[l], which is replaced only after the last phase (finish_step). A part
sweeps its blocks STEP_CHUNK at a time, W then R of the same blocks, up or down as the call's sweep
direction says (gemm.serpentine). The per-block arithmetic is run()'s: step over a sequence == run on it.
"""

import numpy as np
from numba import njit

from .cell import general_rows
from .config import JIT
from .gemm import cell_of, inputs, no_cell, product, products, serpentine, sums_at, tiling_of, weights
from .layers import rows_at
from .layout import out_stride, scratch_offsets, state_sizes
from .model import head_part, head_phase_of, model_of
from .sequence import copy_floats
from .simd import fptr, ints_at, iptr, keep, wpointer
from .target import LANES
from .team import mine, part_of, phase_end, ran, share

G = 4 * LANES


@njit(inline="always")
def step_geometry(layers, B):
    """(H, Hout, Hp, S, has_proj, h floats, c floats, (hc, hnew, gates, tables) offsets) of a step."""
    m = layers[0]
    L, H, Hout = layers.shape[0], m.hidden, m.output
    has_proj = m.proj_slabs >= 0
    n_h, n_c, _ = state_sizes(L, 1, B, H, Hout, has_proj)
    return (H, Hout, m.blocks * LANES, out_stride(H, Hout, has_proj), has_proj, n_h,
            scratch_offsets(L, 1, B, H, Hout, has_proj))


@njit(inline="always")
def step_phases(layers):
    """Phases of a bare LSTM's step task (a whole model's may add its head: model.head_phase_of)."""
    return layers.shape[0] * (2 if layers[0].proj_slabs >= 0 else 1)


@njit(inline="always")
def prepare_step(layers, state, B):
    """Fill the int64 tables (rows, goff) and flip the sweep direction kept in the scratch; returns the
    direction of this call's sweep (any start will do: the order of blocks never changes a result)."""
    H, Hout, Hp, S, has_proj, n_h, offs = step_geometry(layers, B)
    gates_of, tables_of = offs[2], offs[3]
    tab = ints_at(fptr(state), tables_of)
    for r in range(B):
        tab[r] = r
        tab[B + r] = gates_of + r * 4 * Hp
    tab[2 * B] = 1 - tab[2 * B] if 0 <= tab[2 * B] <= 1 else 0
    return tab[2 * B] == 1


@njit(**JIT)
def step_stack(wbuf, layers, variant, ctl, call):
    """This participant's parts of one step (see the module docstring)."""
    w, wq, st, B = fptr(wbuf), wpointer(wbuf, variant), call.state, call.B
    H, Hout, Hp, S, has_proj, n_h, offs = step_geometry(layers, B)
    hc_of, hnew_of, tables_of = offs[0], offs[1], offs[3]
    rows, goff = ints_at(st, tables_of), ints_at(st, tables_of + 2 * B)
    per_layer = 2 if has_proj else 1
    first = call.start // per_layer  # a late worker starts at the master's layer
    for l in range(first, layers.shape[0]):
        m = layers[l]
        nblk, chunk, tiling, fuse = m.blocks, m.step_chunk, tiling_of(m), m.default_cell != 0
        hc_l, hnew_l = hc_of + l * B * Hp, hnew_of + l * B * S
        target, t_stride = (hc_l, Hp) if has_proj else (hnew_l, S)
        c_of = n_h + l * B * H
        if l == 0:
            src = inputs(call.x, 0, m.input_size, rows)
        else:
            src = inputs(st, hnew_of + (l - 1) * B * S, S, rows)
        k = l * per_layer
        for i in range(call.team):
            p = part_of(call, i)
            if mine(ctl, call, p, k):
                b0, b1 = share(p, call.team, nblk)
                units = (b1 - b0 + chunk - 1) // chunk
                for u in range(units):
                    c0 = b0 + serpentine(u, 0, units, call.down) * chunk
                    c1 = min(c0 + chunk, b1)
                    products(weights(wq, m.w_slabs, m.input_size, w, m.w_scales), src,
                             weights(wq, m.r_slabs, Hout, w, m.r_scales), inputs(st, l * B * Hout, Hout, rows), B,
                             sums_at(st, goff, m.bias, w), c0, c1, call.down,
                             cell_of(fuse, st, c_of, H, st, target, t_stride, H), tiling)
                    if (variant.ndim == 2 or variant.ndim == 4) and not fuse:  # (else no general cell: never compiled)
                        general_rows(wbuf, m, st, goff, rows, B, st, c_of, st, target, t_stride, c0, c1)
                ran(ctl, call)
        phase_end(ctl, call, k)
        if has_proj:
            hoff = np.empty(B, np.int64)
            for r in range(B):
                hoff[r] = hnew_l + r * S
            for i in range(call.team):
                p = part_of(call, i)
                if mine(ctl, call, p, k + 1):
                    b0, b1 = share(p, call.team, m.proj_blocks)
                    product(weights(w, m.proj_slabs, H, w, -1), inputs(st, hc_l, Hp, rows), B,
                            sums_at(st, iptr(hoff), m.proj_zero, w), b0, b1, call.down, no_cell(st), tiling)
                    ran(ctl, call)
            phase_end(ctl, call, k + 1)
            keep(hoff)
    if variant.ndim >= 3:  # a whole model (never compiled for a bare LSTM): the head's Linear as one more phase
        md = model_of(wbuf)
        if head_phase_of(md, B):
            k = layers.shape[0] * per_layer
            offs_into = np.empty(B, np.int64)  # each row's offset in the Linear's work buffer (call.work)
            for r in range(B):
                offs_into[r] = r * md.wide
            src = rows_at(st, hnew_of + (layers.shape[0] - 1) * B * S, S)  # the last layer's new h
            for i in range(call.team):
                p = part_of(call, i)
                if mine(ctl, call, p, k):
                    head_part(w, md, src, B, rows_at(call.work, 0, md.wide), rows, iptr(offs_into), p, call.team)
                    ran(ctl, call)
            phase_end(ctl, call, k)
            keep(offs_into)


@njit(inline="always")
def finish_step(layers, call):
    """After the last phase (master): every layer's new h becomes the state's h; out (B, Hout) = the last
    layer's."""
    B, L = call.B, layers.shape[0]
    H, Hout, Hp, S, has_proj, n_h, offs = step_geometry(layers, B)
    hnew_of = offs[1]
    for l in range(L):
        for r in range(B):
            copy_floats(call.state, hnew_of + (l * B + r) * S, call.state, (l * B + r) * Hout, Hout)
    for r in range(B):
        copy_floats(call.state, hnew_of + ((L - 1) * B + r) * S, call.y, r * Hout, Hout)
