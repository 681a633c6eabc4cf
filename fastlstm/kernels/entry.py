"""The one compiled entry point: `kernel(op, ...)` runs a sequence, steps a frame, or serves as a worker.

One entry, so a model compiles its kernels once: run, step and the team's worker loop are branches of
the same function and share every compiled callee (each extra entry point would link and compile all of
gates_add again, seconds each on first use). What a model needs beyond the default is in the type of the
`variant` argument, so numba compiles it only for the models that use it (plan.variant_marker): its dtype
names the stored weight type (float32, int8, uint16 = bf16, int16 = fp16); its ndim is 1 + (1 when some
cell needs the general (non-default) path) + (2 when the model has layers around the LSTM: a whole model).
numba replaces `variant.ndim` by its value and drops the branches it rules out before typing them, so a bare
LSTM compiles none of the layers' code (kernels/model.py) and a default-cell model none of the general cell's.

    kernel(op, wbuf, variant, x, y, state, lens, ctl, T, B, row, team) -> int
      op      OP_RUN, OP_STEP or OP_WORKER; whole models also OP_INPUT and OP_HEAD (run()'s stages)
      wbuf    (N,) float32, read-only: the plan (layout.py): the layout.LAYER record of each layer-direction
              (read by field through as_layers), then the packed weights (and a whole model's layers)
      variant an empty marker array: dtype = weight storage, ndim = 1 + general cell + 2 * layers
      x       run: (T*B*I,) input rows, time-major        step: (B*I,) frames (a whole model's: (B*F,))
      y       run: (T*B*D*Hout,) outputs (all directions)  step: (B*Hout,) the last layer's new h, or a whole
                                                                 model's head output (B*C,)
      state   the state buffer (layout.py): run reads/writes h and c of layer-direction `row`; step all
      lens    run: (B,) valid steps per row               step: unused (any int64 array), or a token
                                                                 model's ids (B,) (x is then unused)
      ctl     the team's control block (team.py)
      T, B    sequence length, batch rows; row: run's layer-direction (l*D + d), the worker's tid
      team    threads to use (1: the calling thread alone, no atomics)
      OP_INPUT: x (T*F,) feature rows or lens (T,) token ids -> y (T*I0,) the LSTM's input rows (model.py)
      OP_HEAD:  x (T*D*Hout,) the LSTM's output rows -> y (T*C,) the head's
    Returns 1, or 0 (touching nothing) when the arrays do not have the sizes the plan implies (a token outside
    the vocabulary: 0 from a step, 2 from OP_INPUT).
"""

from collections import namedtuple

import numpy as np
from numba import carray, njit

from .config import ENTRY, JIT
from .layers import first_bad_id, rows_at
from .layout import SHAPE_WORDS, as_layers, layer_scratch_at, state_sizes
from .model import (
    head_after_phase,
    head_phase_of,
    head_stage,
    in_width,
    input_stage,
    model_of,
    out_width,
    run_head,
    run_input,
    takes_tokens,
    work_of,
)
from .sequence import finish_direction, load_h, run_direction, run_phases, work_floats
from .simd import fptr, int_to_fptr, int_to_iptr, ints_at, iptr, keep, ptr_to_int
from .stepper import finish_step, prepare_step, step_phases, step_stack
from .team import (
    BUSY,
    CURRENT,
    DONE,
    GEN,
    OPEN,
    PRESENT,
    TASK,
    atomic_add,
    atomic_cas,
    atomic_load,
    atomic_store,
    await_task,
    cpu_pause,
    publish_begin,
    publish_end,
    reserve_phases,
)
from .vmath import padd

OP_RUN, OP_STEP, OP_WORKER, OP_INPUT, OP_HEAD = 0, 1, 2, 3, 4

# What a participant knows of a call: pointers of the per-call arrays, sizes, and its place in the team.
Call = namedtuple("Call", "x y state lens work T B row team tid phase_base done_base start down")
# The task fields after TASK in the control block, in this order.
(F_OP, F_X, F_Y, F_STATE, F_LENS, F_WORK, F_T, F_B, F_ROW, F_TEAM, F_PHASE_BASE, F_DONE_BASE,
 F_DOWN) = range(TASK, TASK + 13)


@njit(inline="always")
def make_call(x, y, state, lens, work, T, B, row, team, tid, phase_base, done_base, start, down):
    return Call(x, y, state, lens, work, np.int64(T), np.int64(B), np.int64(row), np.int64(team), np.int64(tid),
                np.int64(phase_base), np.int64(done_base), np.int64(start), np.bool_(down))


@njit(inline="always")
def execute(op, wbuf, layers, variant, ctl, call):
    if op == OP_RUN:
        run_direction(wbuf, layers, variant, ctl, call)
    else:
        step_stack(wbuf, layers, variant, ctl, call)


@njit(**JIT)
def lead(op, wbuf, layers, variant, ctl, x, y, state, lens, work, T, B, row, team, phases, down):
    """The master's side of a call: take the team if it is free and worth it, publish the task, run the
    master's parts (tid 0), then close the task and wait until no worker is inside it."""
    if team > 1 and not atomic_cas(ctl, BUSY, 0, 1):
        team = 1  # another caller has the team: run alone
    xp, yp, sp, lp, wp = fptr(x), fptr(y), fptr(state), iptr(lens), fptr(work)
    if team == 1:
        execute(op, wbuf, layers, variant, ctl, make_call(xp, yp, sp, lp, wp, T, B, row, 1, 0, 0, 0, 0, down))
        return
    base = reserve_phases(ctl, phases)
    done_base = atomic_load(ctl, DONE)
    publish_begin(ctl)
    for field, value in ((F_OP, op), (F_X, ptr_to_int(xp)), (F_Y, ptr_to_int(yp)), (F_STATE, ptr_to_int(sp)),
                         (F_LENS, ptr_to_int(lp)), (F_WORK, ptr_to_int(wp)), (F_T, T), (F_B, B), (F_ROW, row),
                         (F_TEAM, team), (F_PHASE_BASE, base), (F_DONE_BASE, done_base), (F_DOWN, np.int64(down))):
        ctl[field] = value
    atomic_store(ctl, CURRENT, 0)
    atomic_store(ctl, OPEN, 1)
    publish_end(ctl)
    execute(op, wbuf, layers, variant, ctl, make_call(xp, yp, sp, lp, wp, T, B, row, team, 0, base, done_base, 0, down))
    atomic_store(ctl, OPEN, 0)
    while atomic_load(ctl, PRESENT) > 0:
        cpu_pause()
    atomic_store(ctl, BUSY, 0)


@njit(inline="always")
def serve(wbuf, layers, variant, ctl, tid):
    """A worker thread's life: wait for a task, join it if it is still open and this tid is in its team,
    run the parts it claims from the master's current phase on, leave; until told to quit."""
    timespec = np.empty(2, np.int64)
    timespec[0], timespec[1] = 1, 0  # sleep in 1 s slices (a futex wake ends a sleep; the timeout bounds a lost one)
    last = atomic_load(ctl, GEN)
    while True:
        gen = await_task(ctl, last, timespec)
        if gen < 0:
            return
        atomic_add(ctl, PRESENT, 1)
        if atomic_load(ctl, OPEN) == 0 or atomic_load(ctl, GEN) != gen:  # finished already, or replaced
            atomic_add(ctl, PRESENT, -1)
            if atomic_load(ctl, GEN) == gen:
                last = gen
            continue
        last = gen
        team = ctl[F_TEAM]
        if tid < team:
            call = make_call(int_to_fptr(ctl[F_X]), int_to_fptr(ctl[F_Y]), int_to_fptr(ctl[F_STATE]),
                             int_to_iptr(ctl[F_LENS]), int_to_fptr(ctl[F_WORK]), ctl[F_T], ctl[F_B], ctl[F_ROW],
                             team, tid, ctl[F_PHASE_BASE], ctl[F_DONE_BASE], atomic_load(ctl, CURRENT),
                             ctl[F_DOWN] != 0)
            execute(ctl[F_OP], wbuf, layers, variant, ctl, call)
        atomic_add(ctl, PRESENT, -1)
    keep(timespec)


@njit(inline="always")
def state_is(state, L, D, B, H, Hout):
    """The state buffer was made for exactly this model and batch (the shape words at its end)."""
    if state.size < 2 * SHAPE_WORDS or state.size % 2:
        return False
    shape = ints_at(fptr(state), state.size - 2 * SHAPE_WORDS)
    return shape[0] == L and shape[1] == D and shape[2] == B and shape[3] == H and shape[4] == Hout


@njit(inline="always")
def run_fits(layers, x, y, state, lens, T, B, row):
    """The sizes run_direction indexes by: x (T*B*I), y (T*B*D*Hout), state (L, D, B) h and c, lens (B,)
    within [0, T]."""
    if row < 0 or row >= layers.shape[0]:
        return False
    m = layers[row]
    D = m.directions
    if not (x.size == T * B * m.input_size and y.size == T * B * D * m.output and lens.size == B
            and state_is(state, layers.shape[0] // D, D, B, m.hidden, m.output)):
        return False
    for r in range(B):
        if lens[r] < 0 or lens[r] > T:
            return False
    return True


@njit(inline="always")
def forward_only(layers):
    """One direction, none of the layers reverse: a stack step() can run."""
    if layers[0].directions != 1:
        return False
    for l in range(layers.shape[0]):
        if layers[l].reverse != 0:
            return False
    return True


@njit(inline="always")
def step_fits(layers, x, y, state, B):
    """The sizes step_stack indexes by: a forward-only stack, x (B*I0), y (B*Hout), the whole state buffer (a
    whole model's State is longer: the layers' scratch is before its shape words)."""
    m = layers[0]
    if not forward_only(layers):
        return False
    _, _, total = state_sizes(layers.shape[0], 1, B, m.hidden, m.output, m.proj_slabs >= 0)
    return (x.size == B * m.input_size and y.size == B * m.output and state.size >= total
            and state_is(state, layers.shape[0], 1, B, m.hidden, m.output))


@njit(**JIT)
def model_step(wbuf, layers, variant, x, y, state, lens, ctl, B, team):
    """A whole model's step of B streams in this one call: the input stage, the LSTM's step (as OP_STEP, on
    the team), the head: y (B*C,). x (B*F,) frames, or a token model's ids in lens (B,). The scratch is the
    state buffer's (a State this engine made) or allocated here (any other State of the same LSTM); 0 when a
    size does not fit or an id is outside [0, V) (nothing touched)."""
    md = model_of(wbuf)
    m = layers[0]
    L, H, Hout, I0 = layers.shape[0], m.hidden, m.output, m.input_size
    if B < 1 or not forward_only(layers):
        return 0
    has_proj = m.proj_slabs >= 0
    _, _, total = state_sizes(L, 1, B, H, Hout, has_proj)
    own = state.size == total + B * md.step_floats  # a State made by this engine holds the layers' scratch
    if not (state.size >= total and state_is(state, L, 1, B, H, Hout)) or y.size != B * out_width(md, Hout):
        return 0
    if takes_tokens(md):
        if lens.size != B or first_bad_id(iptr(lens), B, in_width(md, I0)) >= 0:
            return 0
    elif x.size != B * in_width(md, I0):
        return 0
    extra = state if own else np.empty(B * md.step_floats, np.float32)
    w, at = fptr(wbuf), layer_scratch_at(L, 1, B, H, Hout, has_proj) if own else 0
    x_rows, work = work_of(md, fptr(extra), at, B, I0)
    down = prepare_step(layers, state, B)
    x_in = x
    if md.pre > 0:
        F = in_width(md, I0)
        input_stage(w, md, rows_at(fptr(x), 0, F), iptr(lens), np.int64(0), B, x_rows, work)
        x_in = carray(padd(fptr(extra), x_rows.base), B * I0)  # the LSTM reads its input rows from the scratch
    head_phase = head_phase_of(md, B)  # the head's Linear as the task's last phase, into work buffer 0
    head_into = carray(padd(fptr(extra), work.base), B * md.wide)
    lead(np.int64(OP_STEP), wbuf, layers, variant, ctl, x_in, y, state, lens, head_into, np.int64(1), B,
         np.int64(0), team, step_phases(layers) + np.int64(head_phase), np.bool_(down))
    last_h = (L - 1) * B * Hout  # finish_step's copy of the last layer's new h goes onto its own h (same values)
    finish_step(layers, make_call(fptr(x_in), padd(fptr(state), last_h), fptr(state), iptr(lens), fptr(state), 1, B,
                                  0, 1, 0, 0, 0, 0, down))
    C = out_width(md, Hout)
    if head_phase:
        head_after_phase(w, md, B, rows_at(fptr(y), 0, C), work)
    else:
        head_stage(w, md, rows_at(fptr(state), last_h, Hout), B, rows_at(fptr(y), 0, C), Hout, work)
    keep(extra)
    keep(x_in)
    return 1


@njit(**ENTRY)
def kernel(op, wbuf, variant, x, y, state, lens, ctl, T, B, row, team):
    layers = as_layers(wbuf)
    if op == OP_WORKER:
        serve(wbuf, layers, variant, ctl, row)
        return 1
    if variant.ndim >= 3:  # a whole model's ops (ndim 3 or 4: plan.py); a bare LSTM's kernel has none of this
        if op == OP_STEP:
            return model_step(wbuf, layers, variant, x, y, state, lens, ctl, B, team)
        if op == OP_INPUT:
            return run_input(wbuf, x, y, lens, T, layers[0].input_size)
        if op == OP_HEAD:
            return run_head(wbuf, x, y, T, layers[0].directions * layers[0].output)
    if op == OP_STEP:
        if B < 1 or not step_fits(layers, x, y, state, B):
            return 0
        down = prepare_step(layers, state, B)
        lead(np.int64(OP_STEP), wbuf, layers, variant, ctl, x, y, state, lens, state, np.int64(1), B, np.int64(0),
             team, step_phases(layers), np.bool_(down))
        finish_step(layers, make_call(fptr(x), fptr(y), fptr(state), iptr(lens), fptr(state), 1, B, 0, 1, 0, 0, 0,
                                      0, down))
        return 1
    if T < 1 or B < 1 or not run_fits(layers, x, y, state, lens, T, B, row):
        return 0
    m = layers[row]
    work = np.empty(work_floats(m, T, B), np.float32)
    call = make_call(fptr(x), fptr(y), fptr(state), iptr(lens), fptr(work), T, B, row, 1, 0, 0, 0, 0, False)
    load_h(m, call, row * B * m.output)
    lead(np.int64(OP_RUN), wbuf, layers, variant, ctl, x, y, state, lens, work, T, B, row, team,
         run_phases(layers, row, lens, B), np.bool_(False))
    finish_direction(layers, call)
    keep(work)
    return 1
