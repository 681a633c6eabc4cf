"""`fastlstm info`'s plan lines and the crossovers it reports: read from calibration's memo or cache file, never
measured (info must stay a quick look at a file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import fastlstm
from fastlstm import calibration, plan_info
from fastlstm.benchmarking.models import make_spec
from fastlstm.kernels.target import TARGET


@pytest.fixture
def calibration_file(tmp_path, monkeypatch):
    """calibration's cache file and memo, redirected to a temporary file and an empty memo."""
    path = tmp_path / "crossovers.json"
    monkeypatch.setattr(calibration, "_path", lambda team: str(path))
    monkeypatch.setattr(calibration, "_memo", {})
    monkeypatch.delenv("FASTLSTM_CALIBRATION", raising=False)
    return path


def stored(step: int, run: int) -> dict:
    return {"team": 2, "step": step, "run": run, "source": "measured", "sizes": [32, 64],
            "team_over_solo_step": [1.2, 0.8], "team_over_solo_run": [1.1, 0.9], "measured_at": 1.0}


def test_crossovers_not_known_yet_are_not_measured(calibration_file, monkeypatch):
    monkeypatch.setattr(calibration, "_measure", lambda team: pytest.fail("info must never measure"))
    assert plan_info.known_crossovers(2) == {"team": 2, "source": "not measured yet"}
    assert "not measured yet" in plan_info.crossover_line(plan_info.known_crossovers(2))
    assert not calibration_file.exists()
    assert plan_info.known_crossovers(1)["source"] == "one thread"


def test_crossovers_from_the_cache_file_with_their_ratios(calibration_file):
    calibration_file.write_text(json.dumps(stored(8 * 100**2, 4 * 150**2)))
    found = plan_info.known_crossovers(2)
    assert (found["step"], found["run"], found["source"]) == (80000, 90000, "cached")
    assert (found["step_hidden"], found["run_hidden"]) == (100, 150)  # 8 H^2 per step layer, 4 H^2 per run step
    assert found["team_over_solo_step"] == [1.2, 0.8] and found["sizes"] == [32, 64]
    line = plan_info.crossover_line(found)
    assert "80,000 FMAs per step layer" in line and "H >= 100" in line and "cached" in line


def test_memo_wins_and_ratios_of_another_measurement_are_left_out(calibration_file, monkeypatch):
    calibration_file.write_text(json.dumps(stored(80000, 90000)))
    monkeypatch.setitem(calibration._memo, 2, calibration.Crossovers(2, 12345, 678, "measured"))
    found = plan_info.known_crossovers(2)
    assert (found["step"], found["run"], found["source"]) == (12345, 678, "measured")
    assert "team_over_solo_step" not in found  # the file holds an older measurement


def test_calibration_off_reports_the_defaults(calibration_file, monkeypatch):
    monkeypatch.setenv("FASTLSTM_CALIBRATION", "off")
    found = plan_info.known_crossovers(2)
    assert found["source"] == "default" and found["step"] == calibration._defaults(2).step


def test_plan_line_names_this_hosts_kernels():
    line = plan_info.plan_line("fp16", [64, 300])
    assert line.startswith(f"{TARGET.isa} kernels for {TARGET.cpu} ({TARGET.lanes} lanes")
    assert "fp16 weights" in line and "k piece" in line and "step chunk" in line
    plan = plan_info.host_plan([64])
    assert plan["tiles"] == ("6-row + 4-row" if TARGET.lanes == 16 else "2-row") and "64" in plan["panel_rows"]


def test_info_shows_the_plan_without_calibrating(tmp_path):
    """A fresh cache directory: info prints the plan and 'not measured yet', and writes no crossovers file."""
    path = tmp_path / "m.fastlstm"
    fastlstm.save(make_spec(16, 8), path)
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "FASTLSTM_CALIBRATION")}
    env.update(FASTLSTM_CACHE_DIR=str(cache), FASTLSTM_NUM_THREADS="2")
    run = [sys.executable, "-m", "fastlstm.cli", "info"]
    text = subprocess.run([*run, str(path)], capture_output=True, text=True, timeout=120, env=env)
    assert text.returncode == 0, text.stderr
    assert f"  plan        {TARGET.isa} kernels for {TARGET.cpu} ({TARGET.lanes} lanes" in text.stdout
    assert "fp32 weights" in text.stdout
    threads_line = next(line for line in text.stdout.splitlines() if line.startswith("  threads"))
    expected = "not measured yet" if fastlstm.threads.TEAMS_SUPPORTED else "runs on its caller's thread"
    assert expected in threads_line
    meta = json.loads(subprocess.run([*run, "--json", str(path)], capture_output=True, text=True, timeout=120,
                                     env=env).stdout)
    assert meta["host_plan"]["isa"] == TARGET.isa and meta["host_plan"]["weights"] == "fp32"
    assert not list(cache.rglob("crossovers-*.json"))
