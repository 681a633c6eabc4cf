"""Interleaved timing: every candidate runs one block per round, in a shuffled order, so drift of a
shared machine (other jobs, frequency changes) hits all candidates alike. Reports medians.

A block is `n` back-to-back calls timed together (n calibrated so a block lasts ~block_s); one
sample = block time / n. The median over rounds is the figure; p25/p75 show the spread.

Before every block the timer waits until the process's other threads are quiet (`settle`): the
engines' thread pools spin for a while after their last call (OpenBLAS ~0.1 s, ONNX Runtime
tens of ms, GNU OpenMP a few ms), and a pool spinning on a core the next engine needs turns its
multi-threaded calls into scheduler-slice stalls (milliseconds per call on 2 cores). After the
wait, a quarter of the block's calls run untimed first: every engine's first calls after an idle
gap are slow (up to ~3x for the first one on a VM).
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Timing:
    """Seconds per call: one sample per round."""

    samples: list[float] = field(default_factory=list)
    calls_per_block: int = 1

    def quantile(self, q: float) -> float:
        s = sorted(self.samples)
        if not s:
            return math.nan
        pos = q * (len(s) - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)

    @property
    def median(self) -> float:
        return self.quantile(0.5)

    def to_json(self, scale: float = 1e6) -> dict:
        """Microseconds per call (scale=1e6) with the spread."""
        return {"median_us": self.median * scale, "p25_us": self.quantile(0.25) * scale,
                "p75_us": self.quantile(0.75) * scale, "rounds": len(self.samples),
                "calls_per_block": self.calls_per_block}


@dataclass
class Candidate:
    fn: Callable[[], object]
    context: Callable[[], object]  # entered once around each block
    first_output: object = None  # what the first (warm-up) call returned


_TASKS = "/proc/self/task"


def _other_threads_cpu_s() -> float | None:
    """CPU seconds used so far by this process's threads other than the calling one (Linux)."""
    me, total = str(threading.get_native_id()), 0
    try:
        tids = os.listdir(_TASKS)
    except OSError:
        return None
    for tid in tids:
        if tid == me:
            continue
        try:
            with open(f"{_TASKS}/{tid}/schedstat") as f:
                total += int(f.read().split()[0])  # ns on a CPU
        except (OSError, ValueError, IndexError):
            continue  # the thread ended, or no schedstat: count it as quiet
    return total * 1e-9


def settle(max_s: float = 0.5, window_s: float = 0.005, busy: float = 0.1, fallback_s: float = 0.15) -> float:
    """Wait until the other threads of this process (idle engines' spinning pools) use less than
    `busy` of a core over `window_s`, at most max_s. Without /proc, sleep fallback_s.
    Returns the seconds waited."""
    t0 = time.perf_counter()
    last = _other_threads_cpu_s()
    if last is None:
        time.sleep(fallback_s)
        return fallback_s
    while time.perf_counter() - t0 < max_s:
        time.sleep(window_s)
        now = _other_threads_cpu_s()
        if now - last < busy * window_s:
            break
        last = now
    return time.perf_counter() - t0


def _time_block(c: Candidate, n: int) -> float:
    settle()
    with c.context():
        for _ in range(n // 4):  # after the idle wait the first calls run cold (an idle vCPU waking, caches)
            c.fn()
        t0 = time.perf_counter()
        for _ in range(n):
            c.fn()
        return time.perf_counter() - t0


def calibrate(c: Candidate, block_s: float, warmup: int = 3, max_calls: int = 100_000) -> tuple[int, float]:
    """Warm up (first calls compile / allocate), then pick the calls per block.
    Returns (calls per block, estimated seconds per call)."""
    with c.context():
        c.first_output = c.fn()
    n, elapsed = 1, _time_block(c, 1)  # the first call may have compiled: time a second one
    if elapsed >= block_s:  # a slow call: two calls were warm-up enough, one call per block
        return 1, elapsed
    for _ in range(warmup - 2):
        _time_block(c, 1)
    while elapsed < block_s / 10 and n < max_calls:  # grow until one probe is measurable
        n *= 10
        elapsed = _time_block(c, n)
    per_call = elapsed / n
    return max(1, min(max_calls, round(block_s / per_call))), per_call


def interleaved(candidates: dict[str, Candidate], rounds: int, block_s: float, seed: int = 0,
                budget_s: float | None = None, min_rounds: int = 3,
                on_round: Callable[[int], None] | None = None) -> dict[str, Timing]:
    """Time every candidate `rounds` times, interleaved in a shuffled order per round.

    With budget_s, slow configurations (calls far longer than a block) run fewer rounds, never
    fewer than min_rounds, so one huge size cannot eat the whole sweep's time."""
    calls, per_call = {}, {}
    for name, c in candidates.items():
        calls[name], per_call[name] = calibrate(c, block_s)
    if budget_s is not None:
        round_s = sum(calls[n] * per_call[n] for n in candidates)
        if round_s > 0:
            rounds = max(min_rounds, min(rounds, int(budget_s / round_s)))
    timings = {name: Timing(calls_per_block=calls[name]) for name in candidates}
    order = list(candidates)
    rng = random.Random(seed)
    for r in range(rounds):
        rng.shuffle(order)
        for name in order:
            n = calls[name]
            timings[name].samples.append(_time_block(candidates[name], n) / n)
        if on_round is not None:
            on_round(r)
    return timings
