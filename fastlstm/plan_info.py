"""The kernel plan of this host as plain data and as text, for `fastlstm info` and the bench report.

Nothing here compiles or measures. The thread crossovers (calibration.py) are reported only when they are
already known: this process measured or read them (calibration's memo), or the calibration cache file holds
them. Otherwise they say "not measured yet": the first call that could use a team measures them, and `info`
must stay a quick, side-effect-free look at a file.
"""

from __future__ import annotations

import math
from dataclasses import asdict

from . import calibration, threads, tuning
from .kernels.config import K_PIECE
from .kernels.target import TARGET


def tiles() -> str:
    """The register tiles the GEMM runs on this host (kernels/gemm.py picks them by vector width)."""
    from .kernels import gemm

    return "6-row + 4-row" if gemm.panel_tiles is gemm.panel_tiles_wide else "2-row"


def host_plan(inner_sizes=()) -> dict:
    """ISA, vector width, tiles and cache blocking of this host. inner_sizes: the K values (max(I, Hout) of a
    layer) whose panel height to report (tuning.panel_rows depends on K)."""
    l1d, l2 = tuning.cache_sizes()
    return {
        "cpu": TARGET.cpu,
        "isa": TARGET.isa,
        "lanes": TARGET.lanes,
        "vector_registers": TARGET.vector_registers,
        "f16c": TARGET.f16c,
        "tiles": tiles(),
        "k_piece": K_PIECE,
        "panel_rows": {str(K): tuning.panel_rows(K) for K in sorted(set(inner_sizes))},
        "step_chunk": tuning.STEP_CHUNK,
        "l1d_bytes": l1d,
        "l2_bytes": l2,
        "max_threads": threads.MAX_THREADS,
        "threads": threads.get_num_threads(),
    }


def known_crossovers(team: int | None = None) -> dict:
    """The crossovers for a team of `team` threads (default: the current budget) without measuring:
    {"team", "step", "run", "source", "step_hidden", "run_hidden"} plus, when the calibration file holds this
    very measurement, its "sizes" and team/solo time ratios. "source" is "measured" (by this process),
    "cached" (read from the file), "default" (FASTLSTM_CALIBRATION=off), "one thread" (no team: nothing to
    cross) or "not measured yet"."""
    team = threads.get_num_threads() if team is None else int(team)
    if team < 2:
        return {"team": team, "source": "one thread"}
    found, detail = calibration.known(team)
    if found is None:
        return {"team": team, "source": "not measured yet"}
    return {**asdict(found), **equivalent_hidden(found.step, found.run), **detail}


def equivalent_hidden(step_work: int, run_work: int) -> dict:
    """The hidden size at which a batch-1, I = H model reaches each crossover: a step layer does 4H(I + H) = 8H^2
    FMAs, a run's recurrence step 4H^2."""
    return {"step_hidden": round(math.sqrt(step_work / 8)), "run_hidden": round(math.sqrt(run_work / 4))}


# ---- text ------------------------------------------------------------------------------------------
def plan_line(weights: str, inner_sizes=()) -> str:
    """One line: the ISA and lanes the kernels compile for here, the tiles, the weight type, the blocking."""
    p = host_plan(inner_sizes)
    panel = "/".join(str(p["panel_rows"][k]) for k in p["panel_rows"]) or "-"
    widen = ""
    if weights == "fp16":
        widen = " (F16C)" if p["f16c"] else " (no F16C: widened in software)"
    return (f"{p['isa']} kernels for {p['cpu']} ({p['lanes']} lanes, {p['tiles']} tiles), {weights} weights{widen}; "
            f"k piece {p['k_piece']}, panel {panel} rows, step chunk {p['step_chunk']} blocks")


def crossover_line(found: dict) -> str:
    """One line: the thread budget and when a team of it pays (or why that is not known)."""
    team, source = found["team"], found["source"]
    head = f"{team} of {threads.MAX_THREADS}"
    if source == "one thread":
        return f"{head}: every call runs on its caller's thread"
    if source == "not measured yet":
        return f"{head}: crossovers not measured yet (the first multi-threaded call measures them, a few seconds)"
    return (f"{head}: a team from {found['step']:,} FMAs per step layer (I = H: H >= {found['step_hidden']}), "
            f"{found['run']:,} per run step (H >= {found['run_hidden']}); {source}")
