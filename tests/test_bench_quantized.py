"""`fastlstm bench` with the weight types as rows (tiny sizes, FASTLSTM_BENCH_SMOKE): each engine's path
below fp32 is measured on the same weights, with its error against fp32, in the tables and the plot."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("matplotlib")

QUANTIZED = ("fastlstm int8", "fastlstm fp16", "fastlstm bf16", "onnxruntime int8", "onnxruntime int8 per-channel",
             "torch qint8", "torch float16")


def run_bench(out, *args, **env):
    cmd = [sys.executable, "-m", "fastlstm.cli", "bench", "--sizes", "32", "--threads", "1", "--batch", "2",
           "--out", str(out), *args]
    full_env = {k: v for k, v in os.environ.items() if k != "FASTLSTM_BENCH_DISABLE"}
    full_env.update({"FASTLSTM_BENCH_SMOKE": "1", **env})
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=full_env)


def test_bench_weight_types_side_by_side(tmp_path):
    proc = run_bench(tmp_path, "--weights", "fp32,int8,fp16,bf16")
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["config"]["weights"] == ["fp32", "int8", "fp16", "bf16"]
    for rec in results["results"]:
        eng = rec["engines"]
        for name in QUANTIZED:
            assert eng[name]["us_per_step"] > 0, (rec["mode"], name, eng[name])
        err = {name: eng[name]["max_abs_err"] for name in (*QUANTIZED, "fastlstm")}
        assert err["fastlstm"] < 1e-5  # fp32 against ORT fp32
        # every path below fp32 really is below fp32 (a quantizer that did nothing would show ~1e-7)
        assert all(err[name] > 1e-5 for name in QUANTIZED), err
        assert err["fastlstm fp16"] < err["fastlstm bf16"] < err["fastlstm int8"] < 1e-2
        assert err["fastlstm int8"] < err["onnxruntime int8"] / 5
    report = (tmp_path / "report.md").read_text()
    assert "## Weights below fp32" in report and "vs best ORT" in report and "lstm_bench_weights.png" in report
    assert (tmp_path / "lstm_bench_weights.png").stat().st_size > 0
    assert "Weights below fp32: step" in proc.stdout


def test_bench_fp32_only_has_no_weight_section(tmp_path):
    proc = run_bench(tmp_path, "--weights", "fp32", FASTLSTM_BENCH_DISABLE="torch")
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert not any(name in rec["engines"] for rec in results["results"] for name in QUANTIZED)
    assert "Weights below fp32" not in (tmp_path / "report.md").read_text()
    assert not (tmp_path / "lstm_bench_weights.png").exists()
    bad = subprocess.run([sys.executable, "-m", "fastlstm.cli", "bench", "--weights", "int4"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "expected weight types" in bad.stderr


def test_quick_preset_keeps_int8_at_one_thread_only():
    """--quick measures int8 as the one type below fp32, at 1 thread; asking for --weights lifts that; the report
    has no weight table for a thread count where no type below fp32 ran."""
    from fastlstm.benchmarking import cli, quantized_report
    from fastlstm.benchmarking.peers import make_peers

    quick = cli.make_config(True, None, None, None)
    assert quick.weights == ["fp32", "int8"] and quick.weights_threads == [1] and quick.step_sizes == []
    peers = make_peers(weights=quick.weights)
    assert "fastlstm int8" in cli._peers_at(peers, quick, 1)
    assert set(cli._peers_at(peers, quick, 2)) == {"fastlstm", "onnxruntime", "torch", "proxy"}
    asked = cli.make_config(True, None, None, None, weights=["fp16"])
    assert asked.weights == ["fp32", "fp16"] and asked.weights_threads is None
    assert cli.make_config(False, None, None, None).weights_threads is None

    entry = {"median_us": 10.0, "us_per_step": 10.0, "max_abs_err": 1e-3}
    recs = [{"mode": "step", "H": 32, "B": 1, "T": 10, "threads": n,
             "engines": {"fastlstm": entry, **({"fastlstm int8": entry} if n == 1 else {})}} for n in (1, 2)]
    titles = [t for t, _, _ in quantized_report.sections({"config": {"weights": ["fp32", "int8"]}, "results": recs})]
    assert titles == ["Weights below fp32: step, B=1, 1 thread(s), us per step"]
