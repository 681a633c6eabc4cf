"""Interleaved timing: every candidate runs one block per round, in a shuffled order, so drift of a
shared machine (other jobs, frequency changes) hits all candidates alike. Reports medians.

A block is `n` back-to-back calls timed together (n calibrated so a block lasts ~block_s); one
sample = block time / n. The median over rounds is the figure; p25/p75 show the spread.
"""

from __future__ import annotations

import math
import random
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


def _time_block(c: Candidate, n: int) -> float:
    with c.context():
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
