"""The kernel plan and the thread crossovers the sweep ran with: in results.json and in the report.

The crossovers (fastlstm/calibration.py) are settled before the first timed block: measured on first use,
a calibration would otherwise run inside a timed call (the first one that could use a team) and make that
engine's figure look seconds slow.
"""

from __future__ import annotations

import time

from fastlstm import calibration, plan_info


def settle_crossovers(threads: list[int]) -> dict:
    """Read or measure the crossovers for every team size the sweep uses; {team: seconds it took}."""
    took = {}
    for n in sorted(set(threads)):
        if n > 1:
            start = time.perf_counter()
            calibration.crossovers(n)
            took[n] = time.perf_counter() - start
    return took


def crossovers_of(team: int) -> dict | None:
    """What a child process needs to make the same choice as this one: {"team", "step", "run", "source"}."""
    found = plan_info.known_crossovers(team)
    return found if "step" in found else None


def results(cfg, took: dict) -> dict:
    """results.json's "plan": the kernels and, per team size, the crossovers (+ the time settling them took)."""
    inner = [*cfg.sizes, max(cfg.step_reference), *(cfg.step_sizes or []), cfg.pythreads_hidden]
    crossovers = {}
    for n, seconds in took.items():
        crossovers[str(n)] = {**plan_info.known_crossovers(n), "settled_in_s": round(seconds, 3)}
    return {"kernels": plan_info.host_plan(inner), "crossovers": crossovers}


def lines(results_: dict, markdown: bool) -> list[str]:
    """The report's lines: markdown bullets and a table of the calibration's ratios, or indented text."""
    bullet = "- " if markdown else "  "
    return [line if line.startswith(("|", "Calibration")) or not line else bullet + line
            for line in _sentences(results_, markdown)]


def _sentences(results_: dict, markdown: bool) -> list[str]:
    plan = results_.get("plan")
    if not plan:
        return []
    k = plan["kernels"]
    panels = ", ".join(f"{rows} at K = {K}" for K, rows in k["panel_rows"].items())
    out = [f"Kernels: the {k['isa']} plan for {k['cpu']}: {k['lanes']}-lane vectors ({k['vector_registers']} vector "
           f"registers), {k['tiles']} GEMM tiles, k pieces of {k['k_piece']}, panel rows {panels}, step chunk "
           f"{k['step_chunk']} blocks; L1d {k['l1d_bytes'] >> 10} KiB, L2 {k['l2_bytes'] >> 10} KiB per core."]
    for n, found in plan["crossovers"].items():
        if "step" not in found:
            out.append(f"Threads, team of {n}: {found['source']}.")
            continue
        how = {"measured": f"measured by this run ({found['settled_in_s']:.1f} s)",
               "cached": "measured earlier on this host (the calibration cache)",
               "default": "the built-in defaults (FASTLSTM_CALIBRATION=off)"}.get(found["source"], found["source"])
        out.append(f"Threads, team of {n}: a call uses the team from {found['step']:,} FMAs per step layer "
                   f"(batch 1, I = H: H >= {found['step_hidden']}) and {found['run']:,} per run step "
                   f"(H >= {found['run_hidden']}); below, it runs on its caller's thread alone. Crossovers {how}.")
        if "sizes" in found:
            ratios = list(zip(found["sizes"], found["team_over_solo_step"], found["team_over_solo_run"], strict=True))
            if markdown:
                out += ["", f"Calibration, team of {n} over 1 thread, time ratio (below 0.95: the team pays):", "",
                        "| H | " + " | ".join(str(h) for h, _, _ in ratios) + " |",
                        "|---|" + "---:|" * len(ratios),
                        "| step | " + " | ".join(f"{s:.2f}" for _, s, _ in ratios) + " |",
                        "| run | " + " | ".join(f"{r:.2f}" for _, _, r in ratios) + " |", ""]
            else:
                out.append("  team/solo time, step: " + ", ".join(f"H={h} {s:.2f}" for h, s, _ in ratios))
                out.append("  team/solo time, run:  " + ", ".join(f"H={h} {r:.2f}" for h, _, r in ratios))
    return out
