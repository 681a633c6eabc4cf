"""`fastlstm bench` end to end on a tiny sweep (CI-sized: FASTLSTM_BENCH_SMOKE cuts repetitions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fastlstm.threads import MAX_THREADS

pytest.importorskip("matplotlib")

ENGINES = ("fastlstm", "onnxruntime", "torch")


def run_bench(out, threads="1", step_batch="1,2", **env):
    cmd = [sys.executable, "-m", "fastlstm.cli", "bench", "--sizes", "32", "--threads", threads, "--batch", "2",
           "--step-batch", step_batch, "--weights", "fp32", "--out", str(out)]
    full_env = {k: v for k, v in os.environ.items() if k != "FASTLSTM_BENCH_DISABLE"}
    full_env.update({"FASTLSTM_BENCH_SMOKE": "1", **env})
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=full_env)


def check_outputs(out) -> dict:
    for name in ("report.md", "results.json", "lstm_bench.png"):
        assert (out / name).stat().st_size > 0, name
    results = json.loads((out / "results.json").read_text())
    for key in ("schema", "machine", "config", "plan", "peers", "results", "batched_step", "python_threads",
                "isolated", "generate", "coldstart", "memory", "wall_time_s"):
        assert key in results, key
    machine = results["machine"]
    assert machine["cpu"] and machine["logical_cpus"] >= 1
    assert {"numba", "onnxruntime", "torch"} <= set(machine["versions"])
    threads = results["config"]["threads"]
    modes = sorted((r["mode"], r["H"], r["B"], r["threads"]) for r in results["results"])
    assert modes == sorted((m, 32, B, n) for n in threads for m, B in (("batched", 2), ("run", 1), ("step", 1)))
    kernels = results["plan"]["kernels"]
    assert (kernels["isa"], kernels["lanes"]) in (("avx512", 16), ("avx2", 8), ("sse", 8))
    assert kernels["k_piece"] > 0 and kernels["step_chunk"] > 0 and kernels["tiles"]
    for rec in results["results"]:
        assert {*ENGINES, "proxy"} <= set(rec["engines"])  # + the paths below fp32 (test_bench_quantized.py)
        fast = rec["engines"]["fastlstm"]
        assert fast["median_us"] > 0 and fast["us_per_step"] > 0 and fast["p25_us"] <= fast["p75_us"]
        assert rec["engines"]["proxy"]["us_per_step"] > 0
    gen = [(r["H"], r["V"], r["threads"]) for r in results["generate"]]
    assert gen == [(32, 50, n) for n in threads]
    for rec in results["generate"]:
        assert rec["engines"]["fastlstm"]["tokens_per_s"] > 0, rec["engines"]["fastlstm"]
        if results["peers"]["onnxruntime"]["available"]:
            assert rec["engines"]["fastlstm"]["max_abs_err"] < 1e-4
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
    # batched step: the reference point (H = 128, I = 40) and the sweep's H, at every B asked for
    rows = {(r["H"], r["I"], r["B"]): r for r in results["batched_step"]}
    assert set(rows) == {(128, 40, 1), (128, 40, 2), (32, 32, 1), (32, 32, 2)}
    for (_, _, B), rec in rows.items():
        members = {*ENGINES, "fastlstm pool", "proxy"} | ({"fastlstm (1, I)"} if B == 1 else set())
        assert set(rec["engines"]) == members
        for name in members:
            entry = rec["engines"][name]
            assert entry["us_per_stream"] == entry["median_us"] / B > 0, name
            if name != "proxy" and results["peers"]["onnxruntime"]["available"]:  # the same frames, outputs
                assert entry["max_abs_err"] < 1e-4, (B, name)
    # two Python threads: both budgets' rows, and the concurrent streams end bit for bit where serial ones do
    (pythreads,) = results["python_threads"]
    assert pythreads["identical"] is True and pythreads["speedup"] > 0
    assert pythreads["engines"]["two threads"]["frames_per_s"] > 0
    assert results["isolated"] == [] and results["plan"]["crossovers"] == {}  # 1 thread: no team, no children
    report = (tmp_path / "report.md").read_text()
    for heading in ("## Machine", "## Kernel plan and threads", "## Streaming: batched step and Python threads",
                    "÷ 1 stream", "pool +us", "(1, I) +us", "bit-identical"):
        assert heading in report, heading
    assert "Batched step, 1 thread(s)" in proc.stdout and "Two Python threads" in proc.stdout
    assert "Generation, B=1" in proc.stdout


@pytest.mark.skipif(MAX_THREADS < 2, reason="2-thread rows need 2 usable cores")
def test_bench_two_threads_in_own_processes(tmp_path):
    """With 2 threads every configuration is measured in one process and with each engine in its own."""
    proc = run_bench(tmp_path, threads="1,2", step_batch="2")
    assert proc.returncode == 0, proc.stderr
    results = check_outputs(tmp_path)
    own = {(r["mode"], r["H"], r["B"]): r for r in results["isolated"]}
    assert set(own) == {("step", 32, 1), ("run", 32, 1), ("batched", 32, 2), ("batched_step", 128, 2),
                        ("batched_step", 32, 2)}
    for key, rec in own.items():
        assert rec["threads"] == 2 and rec["process"] == "own"
        for name in (*ENGINES, "proxy"):
            if name == "proxy" or results["peers"][name]["available"]:
                assert rec["engines"][name]["median_us"] > 0, (key, name, rec["engines"][name])
    crossovers = results["plan"]["crossovers"]["2"]  # settled before the first timed call
    assert crossovers["source"] in ("measured", "cached", "default")  # default: FASTLSTM_CALIBRATION=off
    assert crossovers["step"] > 0 and crossovers["run"] > 0
    assert {r["threads"] for r in results["python_threads"]} == {1, 2}
    report = (tmp_path / "report.md").read_text()
    assert "## Several threads, each engine in its own process" in report and "vs 1 thread" in report
    assert "2 thread(s), all engines in one process" in report
    assert "Batched step, 2 threads, each engine in its own process" in report
    assert "Threads, team of 2: a call uses the team from" in report


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
        for rec in results["batched_step"]:
            assert "disabled" in rec["engines"][name]["status"]
    for rec in results["batched_step"]:  # fastlstm's members still measured, without an ORT reference
        assert rec["engines"]["fastlstm pool"]["median_us"] > 0 and "max_abs_err" not in rec["engines"]["fastlstm"]
    assert "disabled" in proc.stdout
    assert "disabled" in (tmp_path / "report.md").read_text()


def test_own_process_child_answers_and_fails_cleanly():
    """The child behind the own-process rows: ready, prepare + timed blocks, an error as an answer (not a hang),
    and a dead child reported as such."""
    from fastlstm.benchmarking.isolated import Child

    child = Child("proxy")
    try:
        assert child.answer(120) == {"ready": "proxy"}
        config = {"mode": "step", "H": 16, "I": 16, "B": 1, "T": 4, "threads": 1, "block_s": 0.001,
                  "crossovers": None}
        prepared = child.ask(120, op="prepare", engine="proxy", **config)
        assert prepared["calls"] >= 1 and prepared["per_call"] > 0
        assert child.ask(60, op="block", n=prepared["calls"])["seconds"] > 0
        assert "KeyError" in child.ask(60, op="prepare", engine="no such engine", **config)["error"]
        child.proc.kill()
        child.proc.wait()
        assert "process ended" in child.ask(10, op="block", n=1)["error"]
    finally:
        child.close()
    assert not child.alive
