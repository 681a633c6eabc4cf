"""A whole model's step for one stream in one numba call: input stage, the LSTM step, the head.

    token_step(wbuf, meta, lbuf, pre, post, token, h, c, scratch, out) -> int64
    frame_step(wbuf, meta, lbuf, pre, post, x, h, c, scratch, out) -> int64
        wbuf, meta      the LSTM's packed weights and table (kernels/pack.py)
        lbuf, pre, post the layers' packed buffer and tables (kernels/layers.py; post without SelectLast)
        token           int64 id (token_step), x (F,) float32 frame (frame_step)
        h (L, 1, 1, Hout), c (L, 1, 1, H)   the stream's state, advanced in place
        scratch (>= model_step_floats) float32; out (C,) float32: the head's output
    Returns STEP_DONE, BAD_TOKEN (the id is outside [0, V): nothing touched) or NOT_FITTED (shapes or
    scratch do not fit: nothing touched; the engine then takes its checked path).

Scratch layout: [the LSTM's input row (I0, padded to 16) | the LSTM step's scratch | the layers' scratch].
An embedding-only input stage reads the table row in place (no copy).
"""

from numba import njit

from .config import JIT
from .layers import (
    K_EMBEDDING,
    LB,
    T_IN,
    T_KIND,
    T_OUT,
    T_W,
    layers_scratch_floats,
    load_lanes,
    rows_forward,
    scratch_stride,
    stack_chunk,
    store_lanes,
)
from .pack import M_I, M_NBLK
from .recurrence import scratch_floats, step_stack
from .simd import fptr

STEP_DONE, BAD_TOKEN, NOT_FITTED = 0, 1, 2


@njit(**JIT)
def model_step_floats(meta, pre, post):
    """Scratch floats of token_step / frame_step."""
    I0 = meta[0, M_I]
    return (-(-I0 // LB) * LB + scratch_floats(meta[0, M_NBLK], 1) + layers_scratch_floats(pre, 1)
            + layers_scratch_floats(post, 1))


@njit(inline="always")
def head(lbuf, post, h, scratch, out):
    """out (C,) = the layers after the LSTM on the last layer's new h (a batch-1 stream); False if out does
    not fit."""
    L, Hout = h.shape[0], h.shape[3]
    if post.shape[0] == 0:
        if out.shape[0] != Hout:
            return False
        out[:] = h[L - 1, 0, 0]
        return True
    return rows_forward(lbuf, post, h[L - 1, 0], out.reshape((1, out.shape[0])), scratch)


@njit(**JIT)
def token_step(wbuf, meta, lbuf, pre, post, token, h, c, scratch, out):
    """One token id through the whole model (see the module docstring)."""
    if pre.shape[0] == 0 or pre[0, T_KIND] != K_EMBEDDING or scratch.shape[0] < model_step_floats(meta, pre, post):
        return NOT_FITTED
    if token < 0 or token >= pre[0, T_IN]:
        return BAD_TOKEN
    I0, E = meta[0, M_I], pre[0, T_OUT]
    lstm_at = -(-I0 // LB) * LB
    layers_at = lstm_at + scratch_floats(meta[0, M_NBLK], 1)
    x = scratch[:I0]  # (I0,): the LSTM's input row
    w, row = fptr(lbuf), pre[0, T_W] + token * E
    if pre.shape[0] == 1:
        if E != I0:
            return NOT_FITTED
        dst = fptr(x)
        for k in range(0, E, LB):
            store_lanes(dst, k, load_lanes(w, row + k, E - k), E - k)
    else:  # the embedding row to half 0 of the layers' scratch, the layers after it from there into x
        stride = scratch_stride(pre)
        buf = fptr(scratch[layers_at:])
        for k in range(0, E, LB):
            store_lanes(buf, k, load_lanes(w, row + k, E - k), E - k)
        if pre[pre.shape[0] - 1, T_OUT] != I0:
            return NOT_FITTED
        stack_chunk(w, pre, 1, buf, stride, 0, fptr(x), I0, 1, buf, stride, stride)
    if not step_stack(wbuf, meta, x, h, c, scratch[lstm_at:layers_at]):
        return NOT_FITTED
    if not head(lbuf, post, h, scratch[layers_at:], out):
        return NOT_FITTED
    return STEP_DONE


@njit(**JIT)
def frame_step(wbuf, meta, lbuf, pre, post, x, h, c, scratch, out):
    """One feature frame x (F,) through the whole model (see the module docstring)."""
    if scratch.shape[0] < model_step_floats(meta, pre, post) or (pre.shape[0] and pre[0, T_KIND] == K_EMBEDDING):
        return NOT_FITTED
    I0 = meta[0, M_I]
    lstm_at = -(-I0 // LB) * LB
    layers_at = lstm_at + scratch_floats(meta[0, M_NBLK], 1)
    row = scratch[:I0]
    if pre.shape[0]:
        if not rows_forward(lbuf, pre, x.reshape((1, x.shape[0])), row.reshape((1, I0)), scratch[layers_at:]):
            return NOT_FITTED
    elif x.shape[0] == I0:
        row[:] = x
    else:
        return NOT_FITTED
    if not step_stack(wbuf, meta, row, h, c, scratch[lstm_at:layers_at]):
        return NOT_FITTED
    if not head(lbuf, post, h, scratch[layers_at:], out):
        return NOT_FITTED
    return STEP_DONE
