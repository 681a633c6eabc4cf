"""When a team of threads pays on this host: measured once, cached beside the compiled kernels.

A call splits each phase of its kernel (one layer of a step, one time step of a run's recurrence) over the
team; the split pays only when a phase's work outweighs the cost of handing out parts and waiting for
them, and when the threads do not just compete for the same memory bandwidth. Both depend on the CPU, so
the crossover is measured here, not guessed: step() and run() of synthetic one-layer models (I = H,
batch 1) at growing H, with 1 thread and with the whole budget, interleaved; the crossover is the
smallest phase work (FMAs) from which the team is at least 1/0.95 as fast at that size and every larger
one measured. Work below it runs on the calling thread alone, so a team never loses more than the 5%
noise margin.

The result is stored as JSON in the kernel cache directory, keyed by CPU, team size and kernel sources
(with the measured ratios), and printed by `fastlstm info`. A measurement taken while the machine was
busy (load average above half the team) serves its process only and is not stored.
FASTLSTM_CALIBRATION=off skips the measurement (the defaults in tuning.py are used); =again measures anew.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass

import numpy as np

from . import tuning
from .kernels.cache import SOURCES_HASH, cache_directory
from .kernels.target import TARGET

SIZES = (32, 48, 64, 96, 128, 160, 192, 256, 320)  # hidden sizes measured (I = H, batch 1)
MARGIN = 0.95  # a team must be at least 1/0.95 as fast


@dataclass(frozen=True)
class Crossovers:
    """Smallest work per phase (FMAs) at which a team of `team` threads pays, per kind of phase."""

    team: int
    step: int  # B * 4H * (I + Hout), one layer of a step
    run: int  # B * 4H * Hout, one time step of a run's recurrence
    source: str  # "measured", "cached" or "default"


_memo: dict[int, Crossovers] = {}


def crossovers(team: int) -> Crossovers:
    """The crossovers for a team of `team` threads: from memory, the cache file, or a measurement."""
    found = _memo.get(team)
    if found is not None:
        return found
    mode = os.environ.get("FASTLSTM_CALIBRATION", "").lower()
    if team < 2 or mode == "off":
        found = _defaults(team)
    else:
        found = None if mode == "again" else _read(team)
        if found is None:
            quiet = _load() < 0.5 * team
            found, detail = _measure(team)
            if quiet and _load() < team:  # a measurement on a busy machine serves this process only
                _write(found, detail)
    _memo[team] = found
    return found


def known(team: int) -> tuple[Crossovers | None, dict]:
    """The crossovers for `team` threads if this process or the cache file already has them, never
    measuring (for `fastlstm info` and reports): (crossovers or None, the stored calibration detail: sizes
    and team/solo ratios when the file holds this very measurement, else {})."""
    mode = os.environ.get("FASTLSTM_CALIBRATION", "").lower()
    found = _memo.get(team)
    if found is None and (mode == "off" or team < 2):
        found = _defaults(team)
    if found is None and mode != "again":
        found = _read(team)
    detail = {}
    if found is not None:
        try:
            with open(_path(team)) as f:
                data = json.load(f)
            if isinstance(data, dict) and (data.get("step"), data.get("run")) == (found.step, found.run):
                detail = {key: data[key] for key in ("sizes", "team_over_solo_step", "team_over_solo_run",
                                                     "measured_at") if key in data}
        except (OSError, ValueError):
            pass
    return found, detail


def pin(found: Crossovers) -> None:
    """Use these crossovers in this process from now on (a benchmark's child process takes its parent's, so
    that it makes the same one-thread-or-team choices and never measures inside a timed call)."""
    _memo[found.team] = found


def _defaults(team: int) -> Crossovers:
    return Crossovers(team, tuning.TEAM_MIN_STEP_WORK, tuning.TEAM_MIN_RUN_WORK, "default")


def _path(team: int) -> str:
    key = f"{TARGET.cpu}-{TARGET.isa}-{_cpu_model()}-team{team}-{SOURCES_HASH[:12]}"
    return os.path.join(str(cache_directory()), f"crossovers-{_safe(key)}.json")


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)[:200]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _read(team: int) -> Crossovers | None:
    try:
        with open(_path(team)) as f:
            data = json.load(f)
        return Crossovers(int(data["team"]), int(data["step"]), int(data["run"]), "cached")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def _write(found: Crossovers, detail: dict) -> None:
    from .atomic import write_atomically

    try:
        data = {**asdict(found), "cpu": TARGET.cpu, "model": _cpu_model(), "measured_at": time.time(), **detail}
        os.makedirs(os.path.dirname(_path(found.team)), exist_ok=True)
        write_atomically(_path(found.team), [json.dumps(data).encode()], prefix=".crossovers-")
    except OSError:
        pass  # a read-only cache: measure again next time


def _measure(team: int) -> tuple[Crossovers, dict]:
    """Time step() and run() with 1 and `team` threads at each size in SIZES (see the module docstring)."""
    from .engine import Engine
    from .spec import DirectionSpec, ModelSpec
    from .threads import _budget

    rng = np.random.default_rng(0)
    ratios_step, ratios_run, work_step, work_run = [], [], [], []
    saved = _budget[0]
    try:
        for H in SIZES:
            k = 1 / np.sqrt(H)
            ds = DirectionSpec(W=rng.uniform(-k, k, (4 * H, H)), R=rng.uniform(-k, k, (4 * H, H)),
                               b=np.zeros(4 * H))
            eng = Engine(ModelSpec(H, H, 1, 1, 0, [[ds]]), _calibrating=team)
            x = rng.normal(size=(16, 1, H)).astype(np.float32)
            state = eng.new_state()
            frame = x[0, 0]
            eng.run(x)  # compiles / loads the kernel, starts the workers
            step_times, run_times = {1: [], team: []}, {1: [], team: []}
            for rep in range(7):
                for n in ((1, team) if rep % 2 == 0 else (team, 1)):
                    _budget[0] = n
                    step_times[n].append(_best(eng.step, (frame, state), 60))
                    run_times[n].append(_best(eng.run, (x,), 6))
            ratios_step.append(np.median(step_times[team]) / np.median(step_times[1]))
            ratios_run.append(np.median(run_times[team]) / np.median(run_times[1]))
            work_step.append(4 * H * 2 * H)
            work_run.append(4 * H * H)
    finally:
        _budget[0] = saved
    found = Crossovers(team, _crossover(work_step, ratios_step), _crossover(work_run, ratios_run), "measured")
    detail = {"sizes": list(SIZES), "team_over_solo_step": [round(float(r), 3) for r in ratios_step],
              "team_over_solo_run": [round(float(r), 3) for r in ratios_run]}
    return found, detail


def _best(fn, args: tuple, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn(*args)
    return (time.perf_counter() - start) / repeats


def _crossover(work: list[int], ratios: list[float]) -> int:
    """The smallest work from which every measured team/solo time ratio is at most MARGIN; past the
    largest size measured (never reached) when the last one is not."""
    crossover = 2 * work[-1]
    for w, ratio in zip(reversed(work), reversed(ratios), strict=True):
        if ratio > MARGIN:
            break
        crossover = w
    return crossover
