"""`fastlstm convert --list` and the one-line promise when libraries warn (issue 16, items 5 and 6).

Third-party warnings and library log lines during convert/info are held back: a failure prints exactly
one stderr line that says how many there were; --debug shows them. torch warns some things once per
process, so the torch case runs in a fresh interpreter."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from payloads import OpenPayload
from safetensors.torch import save_file
from specs import random_spec

import converters
from fastlstm import cli

ROOT = Path(__file__).resolve().parents[1]


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _fastlstm(*argv, cwd, driver: str = ""):
    """The real CLI in a fresh interpreter; `driver` runs first (to patch something for the test)."""
    code = driver + "\nimport sys\nfrom fastlstm.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code, *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


# ------------------------------------------------------------------------------------------ --list


def _two_lstm_module():
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.encoder = torch.nn.LSTM(4, 6, num_layers=2, bidirectional=True)
    model.decoder = torch.nn.LSTM(12, 5, proj_size=3)
    return model


@pytest.mark.parametrize("kind", ["onnx", "pt", "safetensors", "torchscript"])
def test_list_every_kind_of_file(tmp_path, capsys, kind):
    if kind == "onnx":
        src = tmp_path / "m.onnx"
        src.write_bytes(converters.to_onnx(random_spec(3, 4, num_layers=2, num_directions=2)).SerializeToString())
        expected = ["'layer0.lstm' -> 'layer1.lstm': chain of 2 ONNX LSTM nodes, 2 layers, bidirectional, input 3, "
                    "hidden 4, no projection [default]",
                    "--node 'layer1.lstm': ONNX LSTM, 1 layer, bidirectional, input 8, hidden 4, no projection"]
    else:
        model = _two_lstm_module()
        src = tmp_path / {"pt": "m.pt", "safetensors": "m.safetensors", "torchscript": "m.jit"}[kind]
        if kind == "pt":
            torch.save({"model_state": model.state_dict()}, src)
        elif kind == "safetensors":
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(src))
        else:
            torch.jit.save(torch.jit.script(model), str(src))
        outer = "model_state." if kind == "pt" else ""
        expected = [f"--prefix '{outer}encoder.': nn.LSTM, 2 layers, bidirectional, input 4, hidden 6, no projection",
                    f"--prefix '{outer}decoder.': nn.LSTM, 1 layer, one direction, input 12, hidden 5, projection 3"]
    code, out, err = run_cli(capsys, "convert", "--list", src)
    assert code == 0 and err == "", err
    for line in expected:
        assert f"  {line}\n" in out, out
    assert sorted(os.listdir(tmp_path)) == [src.name]  # --list writes nothing


def test_list_shows_what_does_not_convert(tmp_path, capsys):
    sd = torch.nn.LSTM(3, 4).state_dict()
    sd["weight_hh_l0"] = sd["weight_hh_l0"][:, :3]
    torch.save(sd, tmp_path / "bad.pt")
    code, out, _ = run_cli(capsys, "convert", "--list", tmp_path / "bad.pt")
    assert code == 0 and "--prefix '': nn.LSTM, does not convert: weight_hh_l0: expected shape" in out


@pytest.mark.parametrize("content,match", [
    (None, "does not exist"),
    (b"", "empty"),
    (b"PK\x03\x04 not really a zip" * 10, "not a readable PyTorch file"),
    (b"\x08\x07\x12\x03abc", "no graph|no LSTM|not a valid ONNX"),
])
def test_list_errors_are_one_line(tmp_path, capsys, content, match):
    src = tmp_path / ("m.pt" if content and content.startswith(b"PK") else "m.onnx")
    if content is not None:
        src.write_bytes(content)
    code, out, err = run_cli(capsys, "convert", "--list", src)
    assert code == 1 and out == "" and len(err.splitlines()) == 1, err
    assert err.startswith("fastlstm convert: error: ")
    assert __import__("re").search(match, err), err


def test_convert_needs_output_unless_listing(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["convert", "m.onnx"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.splitlines()) == 1 and "-o DST" in err


@pytest.mark.parametrize("kind", ["onnx", "pt"])
def test_ambiguous_file_points_to_list(tmp_path, capsys, kind):
    if kind == "pt":
        src = tmp_path / "two.pt"
        torch.save(_two_lstm_module().state_dict(), src)
    else:
        src = tmp_path / "two.onnx"
        model = converters.to_onnx(random_spec(3, 4))
        second = converters.to_onnx(random_spec(3, 4, seed=1))
        for t in second.graph.initializer:
            t.name = "b_" + t.name
        node = next(n for n in second.graph.node if n.op_type == "LSTM")
        node.input[:] = [model.graph.input[0].name] + ["b_" + n if n else n for n in node.input[1:]]
        node.output[:] = ["b_" + n if n else n for n in node.output]
        node.name = "second"
        model.graph.initializer.extend(second.graph.initializer)
        model.graph.node.append(node)
        src.write_bytes(model.SerializeToString())
    code, _, err = run_cli(capsys, "convert", src, "-o", tmp_path / "m.fastlstm")
    assert code == 1 and len(err.splitlines()) == 1
    assert "fastlstm convert --list SRC" in err


# --------------------------------------------------------------------------- warnings and log lines


def _warning_onnx(path: Path):
    """W computed as A / 0 (numpy warns inside onnx.reference while folding it), then R of the wrong
    shape: the conversion fails after onnx's evaluator warned."""
    H, I = 4, 3
    arrays = {"A": np.ones((1, 4 * H, I), np.float32), "Z": np.zeros((1, 4 * H, I), np.float32),
              "R": np.ones((1, 4 * H, H + 1), np.float32)}
    nodes = [helper.make_node("Div", ["A", "Z"], ["W"]),
             helper.make_node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=H)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(a, n) for n, a in arrays.items()])
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())


def test_onnx_warning_is_summarised_in_the_one_line(tmp_path, capsys):
    src = tmp_path / "warns.onnx"
    _warning_onnx(src)
    code, out, err = run_cli(capsys, "convert", src, "-o", tmp_path / "m.fastlstm")
    assert code == 1 and len(err.splitlines()) == 1, err
    assert "R has shape (1, 16, 5)" in err
    assert "1 warning from onnx held back, the first: RuntimeWarning: divide by zero" in err
    assert "--debug shows them" in err
    debug = _fastlstm("--debug", "convert", src, "-o", tmp_path / "m.fastlstm", cwd=tmp_path)
    assert debug.returncode != 0 and "RuntimeWarning: divide by zero" in debug.stderr
    assert "Traceback" in debug.stderr


def test_torch_warning_during_verify_of_a_torchscript_file(tmp_path):
    """A projected LSTM makes torch warn 'LSTM with projections is not supported with oneDNN' (once per
    process) while --verify runs it; a failing verify must still be one line."""
    torch.manual_seed(0)
    src = tmp_path / "proj.jit"
    torch.jit.save(torch.jit.script(torch.nn.LSTM(3, 5, proj_size=2)), str(src))
    driver = textwrap.dedent("""
        import numpy as np
        import fastlstm.cli_convert as cc

        class WrongEngine:  # stands in for fastlstm so that verify fails after torch has run (and warned)
            def __init__(self, spec):
                self.spec = spec

            def run(self, x):
                return np.ones(x.shape[:2] + (self.spec.output_size,), np.float32), None

        cc.Engine = WrongEngine
    """)
    args = ("convert", src, "-o", tmp_path / "m.fastlstm", "--verify")
    plain = _fastlstm(*args, cwd=tmp_path, driver=driver)
    assert plain.returncode == 1 and len(plain.stderr.splitlines()) == 1, plain.stderr
    assert "verification against torch" in plain.stderr
    assert "warning from torch held back, the first: UserWarning: LSTM with projections" in plain.stderr
    assert not (tmp_path / "m.fastlstm").exists()


def test_successful_verify_keeps_stderr_empty(tmp_path, capfd):
    src = tmp_path / "proj.jit"
    torch.jit.save(torch.jit.script(torch.nn.LSTM(3, 5, proj_size=2)), str(src))
    code = cli.main(["convert", str(src), "-o", str(tmp_path / "m.fastlstm"), "--verify"])
    out, err = capfd.readouterr()
    assert code == 0 and err == "", err
    assert "verify against torch" in out


def test_library_output_on_descriptor_2_is_held_back(tmp_path, capfd, monkeypatch):
    """C++ libraries (ONNX Runtime, torch) log straight to file descriptor 2."""
    src = tmp_path / "m.onnx"
    src.write_bytes(converters.to_onnx(random_spec(3, 4)).SerializeToString())

    def noisy(*args, **kwargs):
        os.write(2, b"[W:onnxruntime:, graph.cc:128] some log line\n[E:onnxruntime:] another\n")
        print("a python-level line", file=sys.stderr)
        raise converters.onnx_import.ConversionError("the conversion failed")

    monkeypatch.setattr(converters, "from_onnx", noisy)
    code = cli.main(["convert", str(src), "-o", str(tmp_path / "m.fastlstm")])
    out, err = capfd.readouterr()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert "the conversion failed (3 lines of library output held back; --debug shows them)" in err


def test_malicious_torchscript_through_the_cli_runs_nothing(tmp_path):
    src = tmp_path / "evil.pt"
    torch.jit.save(torch.jit.script(torch.nn.LSTM(3, 4)), str(src))
    with zipfile.ZipFile(src) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    root = next(iter(entries)).split("/")[0]
    entries[f"{root}/data.pkl"] = pickle.dumps(OpenPayload(str(tmp_path / "payload_ran")), protocol=2)
    with zipfile.ZipFile(src, "w") as z:
        for name, raw in entries.items():
            z.writestr(name, raw)
    proc = _fastlstm("convert", src, "-o", tmp_path / "m.fastlstm", cwd=tmp_path)
    assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "references io.open" in proc.stderr
    assert not (tmp_path / "payload_ran").exists(), "the CLI executed pickled code"
    assert cli.main(["convert", "--list", str(src)]) == 1
    assert not (tmp_path / "payload_ran").exists(), "--list executed pickled code"
    assert not (tmp_path / "m.fastlstm").exists()
