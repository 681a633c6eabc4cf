"""The recurrence: per time step, gates = xw[t] + R·h, then the cell update, block by block.

Arrays are in packed order (see pack.py). Shapes, with Hp = H padded to whole blocks:
    xw      (T, B, 4Hp)   input projection W·x + b for the whole sequence (one GEMM, done by the caller)
    Rp      (4Hp, Hout)   packed recurrent weights
    peep    (3, H)        peepholes p_i, p_f, p_o, or (0, H) when the cell has none
    proj    (Hout, H)     projection, or (0, 0) when Hout == H is not projected
    cell    (CELL_PARAMS,) float64: see cell_params()
    lens    (B,) int64    valid steps per batch row (T when there is no sequence_lens)
    h       (B, Hout)     state in, final state out (taken at each row's last valid step)
    c       (B, H)        state in, final state out
    y       (T, B, Hout)  outputs; rows past a sequence's length are 0
"""

import numpy as np
from numba import njit

from .activations import ACTIVATION_CODES, activation, sigmoid_fast, tanh_fast
from .config import JIT

CELL_PARAMS = 11  # f, g, h codes | alphas (3) | betas (3) | clip (inf = none) | input_forget


def cell_params(options) -> np.ndarray:
    """CellOptions -> the (CELL_PARAMS,) float64 vector the general cell reads."""
    codes = [ACTIVATION_CODES[name] for name in options.activations]
    clip = np.inf if options.clip is None else options.clip
    return np.array([*codes, *options.alphas, *options.betas, clip, float(options.input_forget)])


@njit(**JIT)
def block_gates(Rp, row0, block, h_row, xw_row, gates):
    """gates (4*block,) = xw_row[row0:row0+4*block] + Rp[row0:row0+4*block] @ h_row."""
    hout = h_row.shape[0]
    for r in range(4 * block):
        acc = np.float32(0.0)
        for k in range(hout):
            acc += Rp[row0 + r, k] * h_row[k]
        gates[r] = xw_row[row0 + r] + acc


@njit(**JIT)
def update_block_default(gates, block, unit0, units, c_row, hc_row):
    """Default cell (sigmoid/tanh/tanh): c and o*tanh(c) for `units` valid units of one block."""
    for u in range(units):
        i = sigmoid_fast(gates[u])
        f = sigmoid_fast(gates[block + u])
        g = tanh_fast(gates[2 * block + u])
        o = sigmoid_fast(gates[3 * block + u])
        c_new = f * c_row[unit0 + u] + i * g
        c_row[unit0 + u] = c_new
        hc_row[unit0 + u] = o * tanh_fast(c_new)


@njit(**JIT)
def update_block_general(gates, block, unit0, units, c_row, hc_row, peep, cell):
    """Any ONNX cell: activations with alpha/beta, clip on the gate activations' inputs (peephole
    terms included; h(c) and the stored c are not clipped, as in ONNX Runtime), peepholes,
    input_forget. float64 math, so the options cost speed, not accuracy."""
    f_code, g_code, h_code = int(cell[0]), int(cell[1]), int(cell[2])
    clip = cell[9]
    has_peep = peep.shape[0] == 3
    for u in range(units):
        j = unit0 + u
        c_prev = np.float64(c_row[j])
        zi, zf = np.float64(gates[u]), np.float64(gates[block + u])
        zg, zo = np.float64(gates[2 * block + u]), np.float64(gates[3 * block + u])
        if has_peep:
            zi += peep[0, j] * c_prev
            zf += peep[1, j] * c_prev
        i = activation(f_code, min(max(zi, -clip), clip), cell[3], cell[6])
        if cell[10] != 0.0:  # input_forget couples the gates: f = 1 - i (ONNX Runtime)
            f = 1.0 - i
        else:
            f = activation(f_code, min(max(zf, -clip), clip), cell[3], cell[6])
        g = activation(g_code, min(max(zg, -clip), clip), cell[4], cell[7])
        c_new = f * c_prev + i * g
        if has_peep:
            zo += peep[2, j] * c_new
        o = activation(f_code, min(max(zo, -clip), clip), cell[3], cell[6])
        c_row[j] = c_new
        hc_row[j] = o * activation(h_code, c_new, cell[5], cell[8])


@njit(**JIT)
def recurrence(xw, Rp, peep, proj, cell, lens, reverse, default_cell, block, h, c, y):
    """Run one direction of one layer over the sequence (see the module docstring for shapes)."""
    T, B = xw.shape[0], xw.shape[1]
    H, Hout = c.shape[1], h.shape[1]
    n_blocks = -(-H // block)
    gates = np.empty(4 * block, dtype=np.float32)
    hc = np.empty((B, H), dtype=np.float32)  # o * h(c) before the projection
    active = np.empty(B, dtype=np.bool_)
    times = np.empty(B, dtype=np.int64)
    for step in range(T):
        for b in range(B):
            active[b] = step < lens[b]
            times[b] = lens[b] - 1 - step if reverse else step
        for blk in range(n_blocks):
            unit0 = blk * block
            units = min(block, H - unit0)
            row0 = blk * 4 * block
            for b in range(B):
                if not active[b]:
                    continue
                block_gates(Rp, row0, block, h[b], xw[times[b], b], gates)
                if default_cell:
                    update_block_default(gates, block, unit0, units, c[b], hc[b])
                else:
                    update_block_general(gates, block, unit0, units, c[b], hc[b], peep, cell)
        for b in range(B):
            if not active[b]:
                continue
            if proj.shape[0] == 0:
                h[b, :] = hc[b]
            else:
                for k in range(Hout):
                    acc = np.float32(0.0)
                    for j in range(H):
                        acc += proj[k, j] * hc[b, j]
                    h[b, k] = acc
            y[times[b], b, :] = h[b]
    # Rows past each sequence's length emit zeros (ONNX); forward rows t >= len, reverse the same.
    # A length-0 row ends with a zero state, as ONNX Runtime does.
    for b in range(B):
        for t in range(lens[b], T):
            y[t, b, :] = 0.0
        if lens[b] == 0:
            h[b, :] = 0.0
            c[b, :] = 0.0
