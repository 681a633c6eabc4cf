"""CLI failures (issue #6): exit code, exactly one stderr line, no traceback, and no output or temporary
file left behind; --debug shows the traceback."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_models import lstm_weights
from payloads import OpenPayload, live_payload
from specs import random_spec

import converters
import fastlstm
from fastlstm import cli

torch = pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[1]



def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_failure(code, err, out_dir: Path, expected_code=1, match=""):
    assert code == expected_code, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert match.lower() in lines[0].lower(), lines[0]
    assert sorted(os.listdir(out_dir)) == [], "a failed convert left a file behind"


def _two_lstms(path: Path):
    a = lstm_weights(3, 4)
    inits = [numpy_helper.from_array(a[k], k) for k in ("W", "R", "B")]
    nodes = [helper.make_node("LSTM", ["X", "W", "R", "B"], [f"Y{k}"], name=f"enc{k}", hidden_size=4)
             for k in range(2)]
    nodes.append(helper.make_node("Add", ["Y0", "Y1"], ["Y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())


def _non_constant(path: Path):
    a = lstm_weights(3, 4)
    node = helper.make_node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=4)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                                            for n in ("X", "W")],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(a["R"], "R")])
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())


def _no_lstm(path: Path):
    graph = helper.make_graph([helper.make_node("Relu", ["X"], ["Y"])], "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())


def _good_onnx(path: Path):
    path.write_bytes(converters.to_onnx(random_spec(3, 4)).SerializeToString())


def _good_pt(path: Path):
    torch.save(torch.nn.LSTM(3, 4).state_dict(), path)


def _missing_tensor_pt(path: Path):
    sd = torch.nn.LSTM(3, 4).state_dict()
    del sd["weight_hh_l0"]
    torch.save(sd, path)


# name -> (source file name, builder, extra args, what the message must say)
CASES = {
    "missing source": ("nope.onnx", None, [], "does not exist"),
    "empty onnx": ("empty.onnx", lambda p: p.write_bytes(b""), [], "empty"),
    "empty pt": ("empty.pt", lambda p: p.write_bytes(b""), [], "empty"),
    "random bytes": ("junk.onnx", lambda p: p.write_bytes(np.random.default_rng(0).bytes(3000)), [],
                     "onnx"),
    "random pt": ("junk.pt", lambda p: p.write_bytes(np.random.default_rng(1).bytes(3000)), [],
                  "not a pytorch file"),
    "truncated onnx": ("cut.onnx", lambda p: (_good_onnx(p), p.write_bytes(p.read_bytes()[:150])), [], ""),
    "truncated pt": ("cut.pt", lambda p: (_good_pt(p), p.write_bytes(p.read_bytes()[:300])), [],
                     "not a readable PyTorch file"),
    "text file": ("notes.txt", lambda p: p.write_text("hello, not a model\n" * 10), [], ""),
    "onnx without lstm": ("relu.onnx", _no_lstm, [], "no LSTM node"),
    "several lstms": ("two.onnx", _two_lstms, [], "--node NAME"),
    "unknown node": ("two.onnx", _two_lstms, ["--node", "dec"], "no LSTM node named 'dec'"),
    "non-constant weights": ("nc.onnx", _non_constant, [], "not constant"),
    "prefix on onnx": ("m.onnx", _good_onnx, ["--prefix", "lstm"], "--prefix applies to PyTorch"),
    "node on pt": ("m.pt", _good_pt, ["--node", "x"], "--node applies to ONNX"),
    "unknown prefix": ("m.pt", _good_pt, ["--prefix", "encoder"], "no LSTM with prefix 'encoder.'"),
    "missing tensor": ("m.pt", _missing_tensor_pt, [], "missing tensor weight_hh_l0"),
    "pt of python objects": ("obj.pt", lambda p: torch.save({"a": OpenPayload("/nonexistent/x")}, p), [],
                             "weights_only"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_convert_failure_is_one_line_and_leaves_nothing(tmp_path, capsys, case):
    name, build, extra, match = CASES[case]
    src_dir, out_dir = tmp_path / "src", tmp_path / "out"
    src_dir.mkdir()
    out_dir.mkdir()
    src = src_dir / name
    if build is not None:
        build(src)
    code, out, err = run_cli(capsys, "convert", src, "-o", out_dir / "m.fastlstm", *extra)
    assert_one_line_failure(code, err, out_dir, match=match)
    assert err.startswith("fastlstm convert: error: ")


def test_convert_good_file_still_works(tmp_path, capsys):
    src = tmp_path / "m.onnx"
    _good_onnx(src)
    out = tmp_path / "out"
    out.mkdir()
    code, stdout, err = run_cli(capsys, "convert", src, "-o", out / "m.fastlstm")
    assert code == 0 and err == "" and os.listdir(out) == ["m.fastlstm"]


def test_convert_unwritable_destination(tmp_path, capsys):
    src = tmp_path / "m.onnx"
    _good_onnx(src)
    code, _, err = run_cli(capsys, "convert", src, "-o", tmp_path / "no" / "such" / "dir" / "m.fastlstm")
    assert code == 1 and len(err.splitlines()) == 1 and "Traceback" not in err
    out = tmp_path / "out"
    (out / "m.fastlstm").mkdir(parents=True)  # the destination is a directory
    code, _, err = run_cli(capsys, "convert", src, "-o", out / "m.fastlstm")
    assert code == 1 and len(err.splitlines()) == 1
    assert os.listdir(out) == ["m.fastlstm"] and os.listdir(out / "m.fastlstm") == []


def test_failed_verify_writes_nothing(tmp_path, capsys, monkeypatch):
    src = tmp_path / "m.onnx"
    _good_onnx(src)
    out = tmp_path / "out"
    out.mkdir()

    def fail(*args, **kwargs):
        raise fastlstm.VerificationError("max rel error 1e-2 above tolerance 2e-05")

    monkeypatch.setattr(converters, "verify", fail)
    code, _, err = run_cli(capsys, "convert", src, "-o", out / "m.fastlstm", "--verify")
    assert_one_line_failure(code, err, out, match="above tolerance")


def test_interrupted_or_failing_write_leaves_no_temp_file(tmp_path, capsys, monkeypatch):
    """The temporary file is removed when writing fails half way, even on KeyboardInterrupt."""
    src = tmp_path / "m.onnx"
    _good_onnx(src)
    out = tmp_path / "out"
    out.mkdir()
    for exc in (OSError(28, "No space left on device"), KeyboardInterrupt()):
        def boom(*args, _exc=exc, **kwargs):
            raise _exc

        monkeypatch.setattr(os, "replace", boom)
        code, _, err = run_cli(capsys, "convert", src, "-o", out / "m.fastlstm")
        assert code in (1, 130) and len(err.splitlines()) == 1 and "Traceback" not in err
        assert os.listdir(out) == []


def test_internal_error_is_one_line_exit_3(tmp_path, capsys, monkeypatch):
    src = tmp_path / "m.onnx"
    _good_onnx(src)
    monkeypatch.setattr(converters, "from_onnx", lambda *a, **k: {}["bug"])
    code, _, err = run_cli(capsys, "convert", src, "-o", tmp_path / "o.fastlstm")
    assert code == cli.EXIT_INTERNAL_ERROR and len(err.splitlines()) == 1
    assert "internal error: KeyError" in err and "--debug" in err and "Traceback" not in err
    assert not (tmp_path / "o.fastlstm").exists()


def test_usage_errors_are_one_line_exit_2(capsys):
    for argv in (["convert"], ["frobnicate"], [], ["bench", "--sizes", "a,b"]):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        err = capsys.readouterr().err
        assert info.value.code == 2 and len(err.splitlines()) == 1 and "--help" in err, err


# -------------------------------------------------------------------------------------- info


def _packed(path: Path, **meta_changes):
    spec = random_spec(3, 4)
    fastlstm.save(spec, path)
    if meta_changes:
        data = path.read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + n])
        meta = json.loads(header["__metadata__"]["fastlstm"])
        meta.update(meta_changes)
        header["__metadata__"]["fastlstm"] = json.dumps(meta)
        raw = json.dumps(header).encode()
        path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])


@pytest.mark.parametrize("content", [b"", b"\x00" * 7, b"garbage" * 100, None])
def test_info_on_bad_file(tmp_path, capsys, content):
    path = tmp_path / "m.fastlstm"
    if content is None:
        _packed(path, format_version=99)  # a version this fastlstm does not read
    else:
        path.write_bytes(content)
    code, out, err = run_cli(capsys, "info", path)
    assert code == 1 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("fastlstm info: error: ")


def test_info_survives_hostile_metadata(tmp_path, capsys):
    """source/verify are free-form: wrong types must not crash `info`, control characters are escaped."""
    path = tmp_path / "m.fastlstm"
    _packed(path, source={"format": "onnx\x1b[2J\nfake line"},
            verify={"runtime": "ort", "max_abs_error": "lots", "max_rel_error": None})
    code, out, err = run_cli(capsys, "info", path)
    assert code == 0, err
    assert "\x1b" not in out and "\nfake line" not in out and "'lots'" in out


# ------------------------------------------------------------------------ subprocess: the real CLI


def _fastlstm(*argv, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "fastlstm.cli", *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_malicious_pt_through_the_cli_runs_nothing(tmp_path):
    payload, marker = live_payload(tmp_path)  # checked live under plain pickle
    src = tmp_path / "evil.pt"
    torch.save({"state_dict": {"weight_ih_l0": torch.zeros(16, 3)}, "x": payload}, src)
    out = tmp_path / "out"
    out.mkdir()
    proc = _fastlstm("convert", src, "-o", out / "m.fastlstm", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "weights_only" in proc.stderr
    assert not marker.exists(), "the CLI executed pickled code"
    assert os.listdir(out) == []


def test_debug_shows_traceback(tmp_path):
    bad = tmp_path / "bad.fastlstm"
    bad.write_bytes(b"nope")
    plain = _fastlstm("info", bad, cwd=tmp_path)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr and len(plain.stderr.splitlines()) == 1
    debug = _fastlstm("--debug", "info", bad, cwd=tmp_path)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "FormatError" in debug.stderr
