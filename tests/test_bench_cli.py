"""`fastlstm bench` end to end on a tiny sweep (CI-sized: FASTLSTM_BENCH_SMOKE cuts repetitions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("matplotlib")

ENGINES = ("fastlstm", "onnxruntime", "torch")


def run_bench(out, **env):
    cmd = [sys.executable, "-m", "fastlstm.cli", "bench", "--sizes", "32", "--threads", "1", "--batch", "2",
           "--out", str(out)]
    full_env = {k: v for k, v in os.environ.items() if k != "FASTLSTM_BENCH_DISABLE"}
    full_env.update({"FASTLSTM_BENCH_SMOKE": "1", **env})
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=full_env)


def check_outputs(out) -> dict:
    for name in ("report.md", "results.json", "lstm_bench.png"):
        assert (out / name).stat().st_size > 0, name
    results = json.loads((out / "results.json").read_text())
    for key in ("schema", "machine", "config", "peers", "results", "coldstart", "memory", "wall_time_s"):
        assert key in results, key
    machine = results["machine"]
    assert machine["cpu"] and machine["logical_cpus"] >= 1
    assert {"numba", "onnxruntime", "torch"} <= set(machine["versions"])
    modes = sorted((r["mode"], r["H"], r["B"], r["threads"]) for r in results["results"])
    assert modes == [("batched", 32, 2, 1), ("run", 32, 1, 1), ("step", 32, 1, 1)]
    for rec in results["results"]:
        assert {*ENGINES, "proxy"} <= set(rec["engines"])  # + the paths below fp32 (test_bench_quantized.py)
        fast = rec["engines"]["fastlstm"]
        assert fast["median_us"] > 0 and fast["us_per_step"] > 0 and fast["p25_us"] <= fast["p75_us"]
        assert rec["engines"]["proxy"]["us_per_step"] > 0
    gen = [(r["H"], r["V"], r["threads"]) for r in results["generate"]]
    assert gen == [(32, 50, 1)]
    assert results["generate"][0]["engines"]["fastlstm"]["tokens_per_s"] > 0
    assert "total_s" in results["coldstart"]["engines"]["fastlstm"]
    assert results["memory"]["engines"]["fastlstm"]["file_mib"] > 0
    return results


def test_bench_tiny_sweep(tmp_path):
    proc = run_bench(tmp_path)
    assert proc.returncode == 0, proc.stderr
    results = check_outputs(tmp_path)
    assert "[" in proc.stderr and "step" in proc.stderr  # progress lines during the sweep
    assert "vs ONNX Runtime" in proc.stdout and "Cold start" in proc.stdout
    for rec in results["results"] + results["generate"]:
        for name in ENGINES:
            if results["peers"][name]["available"]:
                assert rec["engines"][name]["max_abs_err"] < 1e-4, (rec["mode"], name)
    assert "Generation, B=1" in proc.stdout
    assert "## Machine" in (tmp_path / "report.md").read_text()


def test_bench_missing_peers_are_reported(tmp_path):
    proc = run_bench(tmp_path, FASTLSTM_BENCH_DISABLE="torch,onnxruntime")
    assert proc.returncode == 0, proc.stderr
    results = check_outputs(tmp_path)
    for name in ("torch", "onnxruntime"):
        assert results["peers"][name]["available"] is False
        assert "disabled" in results["peers"][name]["status"]
        for rec in results["results"]:
            assert "disabled" in rec["engines"][name]["status"]
        assert "disabled" in results["coldstart"]["engines"][name]["status"]
    assert "disabled" in proc.stdout
    assert "disabled" in (tmp_path / "report.md").read_text()
