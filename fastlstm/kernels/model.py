"""A whole model's layers in the entry kernel (entry.py compiles this only for models with layers): the input
stage (embedding gather and the layers before the LSTM) and the head (the layers after it), for run()'s
sequences and inside the one-call step.

The plan's header words (layout.W_*) describe the layers; the table and the row kernels are layers.py's.
A stage works on n rows with this scratch (floats, from `at` in a float32 buffer; int64 tables 2 floats per
value):
    ids    (n,) int64     the step's token ids when Python writes them there (State._ids); else unused
    rows   (n,) int64     0..n-1: the input row numbers gemm.gates_add reads
    offs   (n,) int64     the Linear outputs' row offsets (layers.linear)
    x      (n, I0)        the LSTM's input rows (only when there are layers before it)
    work   (buffers, n, wide)  the layers' work buffers (layers.run_layers)
A step takes it from the state buffer (layout.layer_scratch_at; W_STEP_FLOATS per stream), or allocates it
when the State was not made by this engine (a State of a bare LSTM, State(h, c), a snapshot); run() stages
allocate it for ROW_CHUNK rows and go through the rows a chunk at a time.
"""

from collections import namedtuple

import numpy as np
from numba import njit

from .config import JIT
from .layers import (
    A_NONE,
    C_ACT,
    C_BLOCKS,
    C_IN,
    C_KIND,
    C_OUT,
    K_EMBEDDING,
    K_LINEAR,
    Work,
    activate,
    field,
    first_bad_id,
    gather_rows,
    linear_blocks,
    rows_at,
    run_layers,
)
from .layout import W_BUFFERS, W_LAYER_TABLE, W_POST, W_PRE, W_STEP_FLOATS, W_WIDE
from .sequence import copy_floats
from .simd import fptr, ints_at, iptr, keep

ROW_CHUNK = 64  # run(): rows per pass through a stack (each weight read once per 64 rows; scratch stays small)
# A step's head Linear with at least this many FMAs (B * in * out) runs as the last phase of the step's team task
# (its output blocks split over the team) instead of after it on the calling thread. At a team's crossover
# (~65-131 thousand FMAs per phase on Zen 3, calibration.py) one phase pays for its synchronisation; a
# word-level LM's head (H = 256, V = 10,000: 2.56 million) is far above it.
HEAD_PHASE_MIN_WORK = 1 << 17
DONE, REFUSED, BAD_TOKEN = 1, 0, 2  # what the entry returns for a stage (BAD_TOKEN: an id outside [0, V))

# The layers of a model, from the plan's header words: table (int64 pointer), pre / post (layers before /
# after the LSTM), wide and buffers (the work buffers' row floats and count), step_floats (per stream).
Model = namedtuple("Model", "table pre post wide buffers step_floats")


@njit(inline="always")
def model_of(wbuf):
    w = fptr(wbuf)
    words = ints_at(w, 0)
    return Model(ints_at(w, words[W_LAYER_TABLE]), words[W_PRE], words[W_POST], words[W_WIDE], words[W_BUFFERS],
                 words[W_STEP_FLOATS])


@njit(inline="always")
def takes_tokens(md):
    return md.pre > 0 and field(md.table, 0, C_KIND) == K_EMBEDDING


@njit(inline="always")
def in_width(md, lstm_in):
    """What a row of the model's input holds: the vocabulary V (token models), else features per row."""
    return field(md.table, 0, C_IN) if md.pre > 0 else lstm_in


@njit(inline="always")
def out_width(md, lstm_out):
    """What a row of the model's output holds: the head's last width, else the LSTM's."""
    return field(md.table, md.pre + md.post - 1, C_OUT) if md.post > 0 else lstm_out


@njit(inline="always")
def work_of(md, buf, at, n, lstm_in):
    """(the LSTM's input rows, Work) of n rows in the scratch at buf[at:] (the module docstring)."""
    x_at = at + 6 * n
    work_at = x_at + (n * lstm_in if md.pre > 0 else 0)
    rows, offs = ints_at(buf, at + 2 * n), ints_at(buf, at + 4 * n)
    for j in range(n):
        rows[j] = j
    return rows_at(buf, x_at, lstm_in), Work(buf, np.int64(work_at), np.int64(n * md.wide), md.wide, rows, offs)


@njit(**JIT)
def input_stage(w, md, x, ids, i0, n, dst, work):
    """dst rows (the LSTM's input) = the layers before the LSTM on n rows: token ids ids[i0 .. i0+n-1] (an
    int64 pointer; checked by the caller) or feature rows x."""
    if takes_tokens(md):
        if md.pre == 1:
            gather_rows(w, md.table, ids, i0, n, dst)
        else:  # the embedding rows into work buffer 0, the layers after it from there
            gather_rows(w, md.table, ids, i0, n, rows_at(work.buf, work.base, work.wide))
            run_layers(w, md.table, np.int64(1), md.pre, rows_at(work.buf, work.base, work.wide), np.int64(0), n,
                       dst, work)
    else:  # (plain int64 arguments throughout: a literal would compile another copy of the callee)
        run_layers(w, md.table, np.int64(0), md.pre, x, np.int64(-1), n, dst, work)


@njit(**JIT)
def head_stage(w, md, src, n, dst, width, work):
    """dst rows = the head on n rows of the LSTM's output (a copy of `width` floats without a head)."""
    if md.post > 0:
        run_layers(w, md.table, md.pre, md.pre + md.post, src, np.int64(-1), n, dst, work)
    else:
        for j in range(n):
            copy_floats(src.v, src.base + j * src.stride, dst.v, dst.base + j * dst.stride, width)


@njit(**JIT)
def run_input(wbuf, x, y, ids, N, lstm_in):
    """run()'s input stage: y (N, I0) = the layers before the LSTM on N rows of x (N, F) or token ids (N,)."""
    md = model_of(wbuf)
    if md.pre == 0 or N < 1 or y.size != N * lstm_in:
        return REFUSED
    tokens = takes_tokens(md)
    if tokens:
        if ids.size != N:
            return REFUSED
        if first_bad_id(iptr(ids), N, field(md.table, 0, C_IN)) >= 0:
            return BAD_TOKEN
    elif x.size != N * in_width(md, lstm_in):
        return REFUSED
    n0 = min(N, ROW_CHUNK)
    scratch = np.empty(n0 * md.step_floats, np.float32)
    _, work = work_of(md, fptr(scratch), 0, n0, lstm_in)
    F = in_width(md, lstm_in)
    w, ip = fptr(wbuf), iptr(ids)
    for r0 in range(0, N, n0):
        n = min(n0, N - r0)
        input_stage(w, md, rows_at(fptr(x), r0 * F, F), ip, r0, n, rows_at(fptr(y), r0 * lstm_in, lstm_in), work)
    keep(scratch)
    return DONE


@njit(**JIT)
def run_head(wbuf, x, y, N, lstm_out):
    """run()'s head: y (N, C) = the layers after the LSTM on N rows x (N, F) of its output (F = D * Hout)."""
    md = model_of(wbuf)
    C = out_width(md, lstm_out)
    if N < 1 or x.size != N * lstm_out or y.size != N * C:
        return REFUSED
    n0 = min(N, ROW_CHUNK)
    scratch = np.empty(n0 * md.step_floats, np.float32)
    _, work = work_of(md, fptr(scratch), 0, n0, 0)
    w = fptr(wbuf)
    for r0 in range(0, N, n0):
        n = min(n0, N - r0)
        head_stage(w, md, rows_at(fptr(x), r0 * lstm_out, lstm_out), n, rows_at(fptr(y), r0 * C, C), lstm_out, work)
    keep(scratch)
    return DONE


@njit(inline="always")
def head_phase_of(md, B):
    """True when a step's head starts with a Linear big enough to be a phase of the step's task (computed
    alike by every participant: the head's size and B only, never the team)."""
    if md.post == 0 or field(md.table, md.pre, C_KIND) != K_LINEAR:
        return False
    return B * field(md.table, md.pre, C_IN) * field(md.table, md.pre, C_OUT) >= HEAD_PHASE_MIN_WORK


@njit(inline="always")
def head_part(w, md, src, n, into, rows, offs, part, parts):
    """Part `part` of `parts` of the head's first Linear on n rows: its share of the output blocks, written
    into `into` (work buffer 0 of the step's Work: where head_stage's first layer writes)."""
    i = md.pre
    nblk = field(md.table, i, C_BLOCKS)
    linear_blocks(w, md.table, i, src, n, into, rows, offs, part * nblk // parts, (part + 1) * nblk // parts)


@njit(**JIT)
def head_after_phase(w, md, n, dst, work):
    """The rest of the head after head_part ran for every part: the first Linear's activation, then the
    layers after it (as run_layers would go on from work buffer 0) -> dst rows."""
    i, last = md.pre, md.pre + md.post
    into = rows_at(work.buf, work.base, work.wide)
    code, width = field(md.table, i, C_ACT), field(md.table, i, C_OUT)
    if i == last - 1:
        activate(code, into, dst, n, width)
        return
    if code != A_NONE:
        activate(code, into, into, n, width)
    run_layers(w, md.table, i + 1, last, into, np.int64(0), n, dst, work)
