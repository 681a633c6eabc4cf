"""Threads: the process-wide budget, each engine's team of worker threads, and the one-caller rule.

- `set_num_threads(n)` is process-wide: every call into the kernels, from any Python thread, uses at most
  n threads (the caller's own and n - 1 workers).
- While another Python thread is inside a kernel, a call runs on its caller's thread alone: two callers
  with a team each would put 2n threads on n cores, and a spinning thread whose partner lost its core
  stalls both. So Python threads stepping their own streams scale as separate cores.
- Workers are started on the first call that uses them, sleep in the kernel when idle (futex) and exit
  when their engine is collected. Multi-threading needs x86-64 Linux (futex); elsewhere calls run alone.
"""

from __future__ import annotations

import os
import platform
import sys
import threading
import time
import weakref

import numpy as np

from .errors import InputError
from .kernels.team import MAX_PARTS, QUIT, control_block

# Linux x86-64 only: the team sleeps and wakes through the futex system call (number 202 there).
TEAMS_SUPPORTED = sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


def _default_threads() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    env = os.environ.get("FASTLSTM_NUM_THREADS") or os.environ.get("NUMBA_NUM_THREADS")
    if env and env.isdigit() and int(env) > 0:
        cores = min(cores, int(env)) if os.environ.get("FASTLSTM_NUM_THREADS") is None else int(env)
    return max(1, cores) if TEAMS_SUPPORTED else 1


MAX_THREADS = max(1, min(_default_threads(), MAX_PARTS))  # a phase has at most MAX_PARTS parts
_budget = [MAX_THREADS]  # a one-element list: read without a lock on the step path
# One entry per Python thread inside a kernel now, after _BASE placeholders: append/pop are atomic under the GIL,
# and a list that never shrinks below half its capacity never reallocates (a step allocates nothing).
_BASE = 8
_callers: list = [None] * _BASE


def set_num_threads(n: int) -> None:
    """Threads every kernel call may use, process-wide, from 1 to the number of cores this process may
    run on (FASTLSTM_NUM_THREADS, else NUMBA_NUM_THREADS, caps it)."""
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or not 1 <= n <= MAX_THREADS:
        raise InputError(f"threads must be an integer in [1, {MAX_THREADS}] (the cores this process may use), "
                         f"got {n!r}")
    _budget[0] = int(n)


def get_num_threads() -> int:
    return _budget[0]


def budget() -> int:
    return _budget[0]


class Team:
    """An engine's worker threads and their control block (kernels/team.py)."""

    def __init__(self, kernel, worker_args: tuple):
        self.ctl = control_block()
        self._kernel = kernel
        self._worker_args = worker_args  # the kernel's leading arguments for a worker (op, model, dummies)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        weakref.finalize(self, _stop, self.ctl, self._threads)

    def ensure(self, size: int) -> None:
        """Start workers until size - 1 of them exist (tids 1 .. size-1)."""
        if len(self._threads) >= size - 1:
            return
        with self._lock:
            while len(self._threads) < size - 1:
                tid = len(self._threads) + 1
                args = (*self._worker_args, self.ctl, 0, 0, tid, 1)  # ..., ctl, T, B, row = tid, team
                thread = threading.Thread(target=self._kernel, args=args, name=f"fastlstm-worker-{tid}",
                                          daemon=True)
                thread.start()
                self._threads.append(thread)

    def close(self) -> None:
        _stop(self.ctl, self._threads)


def _stop(ctl: np.ndarray, threads: list) -> None:
    """Tell the workers to quit; they see it within their 1 s sleep slice (or at once when spinning)."""
    ctl[QUIT] = 1
    threads.clear()


# After two Python threads were inside kernels at once, every call runs alone for this long. Checking only
# "is another thread inside now" is not enough: callers that step in a loop enter while the other is in
# Python between calls, take the team, and its worker then competes with the other caller for a core (two
# Python threads at H = 512, budget 2: 0.83x serial throughput on 2 cores, Zen 3).
CONTENDED_S = 0.05
_solo_until = [0.0]  # perf_counter() time until which calls run alone


TWO_INSIDE = _BASE + 2  # len(_callers) with two Python threads inside kernels


def contended() -> None:
    """Two Python threads are inside kernels at once: calls run alone for the next CONTENDED_S seconds."""
    _solo_until[0] = time.perf_counter() + CONTENDED_S


def contention_left() -> float:
    """Seconds until calls may use a team again after two Python threads were inside kernels together (0: now)."""
    return max(0.0, _solo_until[0] - time.perf_counter())


def enter() -> None:
    """A Python thread enters a kernel (pair with leave() in a finally). Engine._fast_step inlines this: every
    step() goes through it."""
    _callers.append(None)
    if len(_callers) >= TWO_INSIDE:
        contended()


def leave() -> None:
    _callers.pop()


def alone() -> bool:
    """True when no other Python thread is inside a kernel and none was, together with another, in the last
    CONTENDED_S seconds."""
    return len(_callers) == _BASE and time.perf_counter() >= _solo_until[0]
