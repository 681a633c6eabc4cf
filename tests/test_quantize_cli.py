"""`fastlstm convert --weights`, its --verify, and `fastlstm info` on quantized files (subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from specs import random_spec

import converters
import fastlstm
from fastlstm.benchmarking.models import make_spec


def cli(*args):
    return subprocess.run([sys.executable, "-m", "fastlstm.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("qcli") / "model.onnx"
    onnx.save(converters.to_onnx(make_spec(48, layers=2)), str(path))
    return path


@pytest.mark.parametrize("kind,tolerance", [("int8", "3e-02"), ("fp16", "5e-03"), ("bf16", "3e-02")])
def test_convert_weights_verify_and_info(onnx_file, tmp_path, kind, tolerance):
    dst = tmp_path / f"{kind}.fastlstm"
    out = cli("convert", onnx_file, "-o", dst, "--weights", kind, "--verify")
    assert out.returncode == 0, out.stderr
    assert f"{kind} weights (from onnx)" in out.stdout and f"(tolerance {tolerance}) ok" in out.stdout
    assert f"{kind} weights against fp32: max abs error" in out.stdout
    spec = fastlstm.load(dst).spec
    v = spec.verify
    assert spec.weights == kind and v["weights"] == kind
    q = v["quantization"]
    assert 0 < q["rms_error"] < q["max_abs_error"] <= float(tolerance)
    assert abs(q["max_abs_error"] - v["max_abs_error"]) < 1e-4  # fp32 engine and ORT agree to 2e-5
    info = cli("info", dst)
    assert f"weights     {kind}" in info.stdout and f"{kind} weights against fp32" in info.stdout
    meta = json.loads(cli("info", dst, "--json").stdout)
    assert meta["weights"] == kind and meta["verify"]["quantization"]["max_abs_error"] == q["max_abs_error"]


def test_convert_torch_source_to_fp16(tmp_path):
    torch = pytest.importorskip("torch")
    lstm = torch.nn.LSTM(6, 16, num_layers=2)
    src, dst = tmp_path / "lstm.pt", tmp_path / "lstm.fastlstm"
    torch.save(lstm.state_dict(), src)
    out = cli("convert", src, "-o", dst, "--weights", "fp16", "--verify")
    assert out.returncode == 0, out.stderr
    assert "verify against torch" in out.stdout and "fp16 weights against fp32" in out.stdout
    x = np.random.default_rng(0).standard_normal((20, 6)).astype(np.float32)
    with torch.inference_mode():
        y_torch = lstm(torch.from_numpy(x))[0].numpy()
    assert np.abs(fastlstm.load(dst).run(x)[0] - y_torch).max() < 5e-3


def test_verify_fails_beyond_the_bound_and_writes_nothing(tmp_path):
    """One huge weight per gate row makes every other int8 weight of the row round to zero: far outside
    the envelope, so --verify refuses (the same model converts at fp16)."""
    spec = random_spec(8, 16, seed=3, scale=0.3)
    for ds in spec.layers[0]:
        ds.W[:, 0] = 60.0
    src, dst = tmp_path / "outlier.onnx", tmp_path / "outlier.fastlstm"
    onnx.save(converters.to_onnx(spec), str(src))
    out = cli("convert", src, "-o", dst, "--weights", "int8", "--verify")
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "exceeds the tolerance 3e-02" in out.stderr and "docs/quantization.md" in out.stderr
    assert not dst.exists()
    assert cli("convert", src, "-o", dst, "--weights", "fp16", "--verify").returncode == 0


def test_convert_refuses_fp16_overflow_in_one_line(tmp_path):
    spec = random_spec(4, 8, seed=4)
    spec.layers[0][0].R[5, 2] = 1e6
    src = tmp_path / "big.onnx"
    onnx.save(converters.to_onnx(spec), str(src))
    out = cli("convert", src, "-o", tmp_path / "big.fastlstm", "--weights", "fp16")
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "layer 0 direction 0 R: weight [5, 2] = 1000000 is beyond fp16's range" in out.stderr
    assert cli("convert", src, "-o", tmp_path / "big.fastlstm", "--weights", "bf16").returncode == 0
    bad = cli("convert", src, "-o", tmp_path / "x.fastlstm", "--weights", "int4")
    assert bad.returncode == 2 and "invalid choice: 'int4'" in bad.stderr
