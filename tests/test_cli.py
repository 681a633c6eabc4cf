"""The `fastlstm` command through a subprocess: convert (+ --verify), info, demo."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from reference import reference_run
from specs import random_spec, rel_error

import converters
import fastlstm


def fastlstm_cli(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "fastlstm.cli", *map(str, args)],
                            capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    spec = random_spec(input_size=6, hidden_size=10, num_layers=2, num_directions=2, seed=21)
    path = tmp_path_factory.mktemp("cli") / "model.onnx"
    onnx.save(converters.to_onnx(spec), str(path))
    return path, spec


def test_convert_onnx_with_verify_and_info(onnx_file, tmp_path):
    src, spec = onnx_file
    dst = tmp_path / "m.fastlstm"
    out = fastlstm_cli("convert", src, "-o", dst, "--verify").stdout
    assert "verify against onnxruntime" in out and "ok" in out
    eng = fastlstm.load(dst)
    assert eng.spec.verify["max_rel_error"] <= 2e-5 and eng.spec.verify["runtime"].startswith("onnxruntime")
    x = np.random.default_rng(0).normal(size=(7, 2, 6)).astype(np.float32)
    assert rel_error(eng.run(x)[0], reference_run(spec, x)[0]) < 2e-5

    info = fastlstm_cli("info", dst).stdout
    assert "2 x bidirectional" in info and "hidden 10" in info and "verified    against onnxruntime" in info
    meta = json.loads(fastlstm_cli("info", dst, "--json").stdout)
    assert meta["num_layers"] == 2 and meta["num_directions"] == 2 and meta["source"]["format"] == "onnx"
    assert meta["cells"][0][1]["reverse"] is True


def test_convert_torch_with_prefix_and_verify(tmp_path):
    torch = pytest.importorskip("torch")
    model = torch.nn.Module()
    model.encoder = torch.nn.LSTM(5, 8, num_layers=2, proj_size=3)
    model.decoder = torch.nn.LSTM(3, 4)
    src, dst = tmp_path / "weights.pt", tmp_path / "enc.fastlstm"
    torch.save(model.state_dict(), src)
    out = fastlstm_cli("convert", src, "-o", dst, "--prefix", "encoder", "--verify").stdout
    assert "verify against torch" in out
    eng = fastlstm.load(dst)
    assert (eng.num_layers, eng.hidden_size, eng.output_size) == (2, 8, 3)
    x = torch.randn(6, 1, 5)
    with torch.inference_mode():
        y_ref, _ = model.encoder(x)
    assert rel_error(eng.run(x.numpy())[0], y_ref.numpy()) < 2e-5


def test_convert_needs_prefix_when_ambiguous(tmp_path):
    torch = pytest.importorskip("torch")
    model = torch.nn.Module()
    model.a, model.b = torch.nn.LSTM(2, 3), torch.nn.LSTM(3, 3)
    torch.save(model.state_dict(), tmp_path / "two.pt")
    result = fastlstm_cli("convert", tmp_path / "two.pt", "-o", tmp_path / "x.fastlstm", check=False)
    assert result.returncode == 1
    assert "a." in result.stderr and "b." in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x.fastlstm").exists()


def test_demo_runs_and_agrees():
    out = fastlstm_cli("demo").stdout
    assert "ok" in out.splitlines()[-1]
    assert "step() over 100 frames vs run()" in out and "onnxruntime" in out
