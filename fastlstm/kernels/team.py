"""Our own thread team, inside native code: a caller thread (the master) and persistent worker threads
share one int64 control block and split each phase of a kernel into parts.

Why not numba's prange: a parallel region per time step costs microseconds to launch, numba's pool
spins against the pools of ONNX Runtime or PyTorch in the same process, `numba.set_num_threads` is per
calling thread, and every prange function compiles a second copy of the kernels it calls (seconds of
first-ever compile each). Here a phase boundary costs two atomic operations and a spin on one cache
line, workers sleep in the kernel (futex) when idle, and the team is one more branch of the one kernel.

Protocol (all words below are separate cache lines of the int64 array `ctl`):
- The master publishes a task: GEN += 1 (odd: writing), the task's fields, GEN += 1 (even: published),
  then wakes sleeping workers. A worker reads GEN, the fields, and GEN again (retrying if it moved), so
  its copy of the task is consistent even if the master finished that task alone and moved on.
- A task is a sequence of phases, each split into `parts`. Every phase has a global id (PHASE grows
  across tasks). A participant claims part p of phase id q by raising CLAIM[p] from below q to q
  (compare-and-swap); it runs only what it claimed and then adds 1 to DONE. Before a phase starts,
  every participant waits until DONE has counted all parts of the previous one.
- Each participant tries its own part first (part = tid: a thread keeps its slice of the weights in its
  own L2 across phases) and then the others. So the master never waits for a worker that has not
  arrived (it runs the parts itself) and a late worker just catches up; results do not depend on who ran
  which part (parts write disjoint outputs, every output element is computed the same way).
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.types import ExternalFunction
from numba.extending import intrinsic

# Control block: one int64 word per cache line (8 words), then the task fields (see entry.py).
#   GEN       task generation (odd while the master writes a task)    SLEEPERS  workers asleep in futex
#   DONE      parts finished, over all tasks                          PHASE     phase ids handed out so far
#   BUSY      a master holds the team (another caller runs alone)     QUIT      workers exit
#   OPEN      the published task is still running                     PRESENT   workers inside the task
#   CURRENT   the phase the master is in (a late worker starts there)
LINE = 8
GEN, SLEEPERS, DONE, PHASE, BUSY, QUIT, OPEN, PRESENT, CURRENT = (i * LINE for i in range(9))
MAX_PARTS = 64
CLAIMS = 9 * LINE  # CLAIM[p] at CLAIMS + p * LINE
TASK = CLAIMS + MAX_PARTS * LINE  # first task field
TASK_FIELDS = 32
CONTROL_WORDS = TASK + TASK_FIELDS

SPIN_CYCLES = 400_000  # ~0.1-0.2 ms of spinning (TSC ticks) after a task before a worker sleeps
YIELD_SPINS = 4096  # spins at a phase boundary before yielding the core (oversubscribed machine)

_I64 = ir.IntType(64)

_syscall = ExternalFunction("syscall", types.int64(types.int64, types.voidptr, types.int64, types.int64,
                                                  types.voidptr, types.voidptr, types.int64))
_sched_yield = ExternalFunction("sched_yield", types.int32())
SYS_FUTEX = 202  # x86-64 Linux
FUTEX_WAIT_PRIVATE, FUTEX_WAKE_PRIVATE = 128, 129


def _slot(context, builder, sig, args):
    """&ctl[idx] for the (int64 array, index) arguments of an intrinsic."""
    data = context.make_array(sig.args[0])(context, builder, args[0]).data
    return builder.gep(data, [context.cast(builder, args[1], sig.args[1], types.intp)], inbounds=True)


def _check_block(arr):
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64 and arr.layout == "C"):
        raise TypeError(f"team: expected the int64 control block, got {arr}")


@intrinsic
def atomic_load(typingctx, ctl, idx):
    """ctl[idx], read atomically (sequentially consistent, like every atomic here)."""
    _check_block(ctl)

    def codegen(context, builder, sig, args):
        return builder.load_atomic(_slot(context, builder, sig, args), "seq_cst", 8)

    return types.int64(ctl, idx), codegen


@intrinsic
def atomic_store(typingctx, ctl, idx, value):
    _check_block(ctl)

    def codegen(context, builder, sig, args):
        value = context.cast(builder, args[2], sig.args[2], types.int64)
        builder.store_atomic(value, _slot(context, builder, sig, args), "seq_cst", 8)
        return context.get_dummy_value()

    return types.void(ctl, idx, value), codegen


@intrinsic
def atomic_add(typingctx, ctl, idx, value):
    """ctl[idx] += value atomically; returns the old value."""
    _check_block(ctl)

    def codegen(context, builder, sig, args):
        value = context.cast(builder, args[2], sig.args[2], types.int64)
        return builder.atomic_rmw("add", _slot(context, builder, sig, args), value, "seq_cst")

    return types.int64(ctl, idx, value), codegen


@intrinsic
def atomic_cas(typingctx, ctl, idx, expected, value):
    """ctl[idx] = value if it holds `expected` (atomically); True if it did."""
    _check_block(ctl)

    def codegen(context, builder, sig, args):
        expected = context.cast(builder, args[2], sig.args[2], types.int64)
        value = context.cast(builder, args[3], sig.args[3], types.int64)
        pair = builder.cmpxchg(_slot(context, builder, sig, args), expected, value, "seq_cst", "seq_cst")
        return builder.extract_value(pair, 1)

    return types.boolean(ctl, idx, expected, value), codegen


@intrinsic
def cpu_pause(typingctx):
    """The x86 PAUSE hint for spin loops (frees the core's resources for its sibling, saves power)."""

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
        builder.call(fn, [])
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def cycles(typingctx):
    """The time-stamp counter (llvm.readcyclecounter): a cheap clock for spin budgets."""

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I64, []), "llvm.readcyclecounter")
        return builder.call(fn, [])

    return types.int64(), codegen


@intrinsic
def address(typingctx, ctl, idx):
    """&ctl[idx] as a void pointer (for system calls)."""
    _check_block(ctl)

    def codegen(context, builder, sig, args):
        return builder.bitcast(_slot(context, builder, sig, args), ir.IntType(8).as_pointer())

    return types.voidptr(ctl, idx), codegen


@intrinsic
def null(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(ir.IntType(8).as_pointer(), None)

    return types.voidptr(), codegen


@njit(inline="always")
def futex_wait(ctl, idx, expected, timespec):
    """Sleep while the low 32 bits of ctl[idx] equal `expected` (or until woken / the timeout in
    timespec (2,) int64 seconds, nanoseconds passes; spurious wake-ups are fine: callers re-check)."""
    _syscall(SYS_FUTEX, address(ctl, idx), FUTEX_WAIT_PRIVATE, expected & 0xFFFFFFFF, address(timespec, 0),
             null(), 0)


@njit(inline="always")
def futex_wake_all(ctl, idx):
    _syscall(SYS_FUTEX, address(ctl, idx), FUTEX_WAKE_PRIVATE, 0x7FFFFFFF, null(), null(), 0)


# ---- master side ----------------------------------------------------------------------------------------
@njit(inline="always")
def publish_begin(ctl):
    """Start writing a task (GEN odd): a worker that reads the fields now will retry."""
    atomic_add(ctl, GEN, 1)


@njit(inline="always")
def publish_end(ctl):
    """The task is readable (GEN even); wake the workers that sleep."""
    atomic_add(ctl, GEN, 1)
    if atomic_load(ctl, SLEEPERS) > 0:
        futex_wake_all(ctl, GEN)


@njit(inline="always")
def reserve_phases(ctl, n):
    """Global ids for a task's n phases: the first is the returned value + 1 (only the master writes PHASE)."""
    base = atomic_load(ctl, PHASE)
    atomic_store(ctl, PHASE, base + n)
    return base


# ---- phases (every participant) ---------------------------------------------------------------------------
@njit(inline="always")
def claim(ctl, part, phase_id):
    """Take part `part` of phase `phase_id` if nobody has: True when this thread must run it."""
    slot = CLAIMS + part * LINE
    seen = atomic_load(ctl, slot)
    return seen < phase_id and atomic_cas(ctl, slot, seen, phase_id)


@njit(inline="always")
def part_done(ctl):
    atomic_add(ctl, DONE, 1)


@njit(inline="always")
def wait_done(ctl, target):
    """Spin until DONE >= target (the phase's parts are all finished); yield the core now and then, so a
    participant that was descheduled in the middle of its part gets it back on an oversubscribed machine."""
    spins = 0
    while atomic_load(ctl, DONE) < target:
        cpu_pause()
        spins += 1
        if spins % YIELD_SPINS == 0:
            _sched_yield()


# ---- worker side ----------------------------------------------------------------------------------------
@njit(inline="always")
def await_task(ctl, last, timespec):
    """A worker's wait for the next task after generation `last`: spin for SPIN_CYCLES, then sleep in the
    kernel. Returns the new (even) generation, or -1 when told to quit."""
    start = cycles()
    while True:
        if atomic_load(ctl, QUIT) != 0:
            return -1
        gen = atomic_load(ctl, GEN)
        if gen != last and gen % 2 == 0:
            return gen
        if cycles() - start < SPIN_CYCLES:
            cpu_pause()
            continue
        atomic_add(ctl, SLEEPERS, 1)
        gen = atomic_load(ctl, GEN)
        if gen == last and atomic_load(ctl, QUIT) == 0:  # nothing new since the check: sleep
            futex_wait(ctl, GEN, gen, timespec)
        atomic_add(ctl, SLEEPERS, -1)
        start = cycles()


def control_block() -> np.ndarray:
    """A zeroed control block, 64-byte aligned (each sync word on its own cache line)."""
    raw = np.zeros(CONTROL_WORDS + LINE, np.int64)
    start = (-raw.ctypes.data % 64) // 8
    return raw[start : start + CONTROL_WORDS]


# ---- a driver's view: phases of a Call (fields team, tid, phase_base, done_base; see entry.py) ----------
@njit(inline="always")
def part_of(call, i):
    """The i-th part this participant tries in a phase: its own part (= its tid) first."""
    return (call.tid + i) % call.team


@njit(inline="always")
def mine(ctl, call, part, k):
    """True when this participant runs part `part` of the task's phase k (always when it runs alone)."""
    return call.team == 1 or claim(ctl, part, call.phase_base + 1 + k)


@njit(inline="always")
def ran(ctl, call):
    """A claimed part is finished (its outputs are written)."""
    if call.team > 1:
        part_done(ctl)


@njit(inline="always")
def phase_end(ctl, call, k):
    """Wait until every part of phase k is finished: the next phase reads what it wrote."""
    if call.team > 1:
        wait_done(ctl, call.done_base + (k + 1) * call.team)
        if call.tid == 0:
            atomic_store(ctl, CURRENT, k + 1)


@njit(inline="always")
def share(part, parts, n):
    """Part `part` of `parts` contiguous shares of range(n): (start, stop)."""
    return part * n // parts, (part + 1) * n // parts
