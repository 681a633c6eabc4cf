"""TorchScript archives (torch.jit.save of scripted or traced modules) convert by name, without running
any of their code (issue 16, item 2): converters/torchscript.py reads the tensor records with an
allow-list unpickler. Oracles: PyTorch on the module that was saved, and the ONNX files Silero ships
for the same model as silero_vad.jit."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from payloads import live_payload
from torch_models import CONFIGS, TOL, Config, make_inputs, make_lstm, rel_err, run_torch

import converters
import fastlstm
from converters import from_onnx, from_torch
from converters.torchscript import is_torchscript, read_torchscript
from fastlstm import ConversionError

SILERO = Path(os.path.dirname(__import__("silero_vad").__file__)) / "data"



@pytest.fixture(autouse=True)
def torch_loads(monkeypatch):
    """Records torch.load / torch.jit.load calls; a TorchScript archive must reach neither (torch.jit.load
    compiles and runs its code). Tests that expect a call clear the list."""
    calls = []
    real_load = torch.load

    def jit_load(*args, **kwargs):
        calls.append("torch.jit.load")
        raise AssertionError("torch.jit.load called")

    def load(*args, **kwargs):
        calls.append("torch.load")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch.jit, "load", jit_load)
    monkeypatch.setattr(torch, "load", load)
    yield calls
    assert calls == [], "a TorchScript archive was handed to torch"


def _engine_vs_torch(spec, module, cfg: Config):
    x, state = make_inputs(cfg)
    eng = fastlstm.Engine(spec)
    st = None
    if state is not None:
        st = eng.new_state(cfg.B)
        st.h[...] = state[0].reshape(st.h.shape)
        st.c[...] = state[1].reshape(st.c.shape)
    y, final = eng.run(x, state=st)
    y_pt, h_pt, c_pt = run_torch(module, x, state)
    assert rel_err(y, y_pt) <= TOL
    assert rel_err(final.h.reshape(h_pt.shape), h_pt) <= TOL
    assert rel_err(final.c.reshape(c_pt.shape), c_pt) <= TOL


@pytest.mark.parametrize("how", ["script", "trace"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_lstm_archive_matches_torch(tmp_path, cfg, how):
    lstm = make_lstm(cfg, seed=11)
    x, _ = make_inputs(cfg)
    archived = torch.jit.script(lstm) if how == "script" else torch.jit.trace(lstm, (torch.from_numpy(x),))
    path = tmp_path / "lstm.pt"
    torch.jit.save(archived, str(path))
    assert is_torchscript(path)
    spec = from_torch(path)
    assert (spec.num_layers, spec.num_directions, spec.proj_size) == (cfg.num_layers, cfg.D, cfg.proj_size)
    assert spec.source["archive"] == "torchscript" and spec.source["prefix"] == ""
    _engine_vs_torch(spec, lstm, cfg)


def test_scripted_batch_first_is_read_from_the_class_source(tmp_path):
    lstm = make_lstm(Config(3, 4, num_layers=2), seed=2)
    lstm.batch_first = True
    torch.jit.save(torch.jit.script(lstm), str(tmp_path / "bf.pt"))
    assert from_torch(tmp_path / "bf.pt").source["batch_first"] is True


@pytest.mark.parametrize("how", ["script", "trace"])
@pytest.mark.parametrize("bias", [True, False])
def test_lstm_cell_archive_matches_torch(tmp_path, how, bias):
    torch.manual_seed(4)
    cell = torch.nn.LSTMCell(5, 7, bias=bias).eval()
    x = torch.randn(6, 3, 5)
    archived = torch.jit.script(cell) if how == "script" else torch.jit.trace(cell, (x[0],))
    path = tmp_path / "cell.jit"
    torch.jit.save(archived, str(path))
    spec = from_torch(path)
    assert (spec.num_layers, spec.num_directions, spec.hidden_size) == (1, 1, 7)
    assert spec.source["module"] == "LSTMCell"
    y, final = fastlstm.Engine(spec).run(x.numpy())
    h = c = torch.zeros(3, 7)
    with torch.no_grad():
        for t in range(6):
            h, c = cell(x[t], (h, c))
            assert rel_err(y[t], h.numpy()) <= TOL
    assert rel_err(final.c[0, 0], c.numpy()) <= TOL
    assert converters.verify(str(path), spec, fastlstm.Engine(spec))["max_rel_error"] <= TOL


def test_model_with_several_lstms_by_prefix(tmp_path):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.LSTM(4, 6, num_layers=2, bidirectional=True)
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(12, 5), torch.nn.LSTM(5, 3, proj_size=2)])

        def forward(self, x):
            y, _ = self.encoder(x)
            return self.blocks[1](self.blocks[0](y))[0]

    torch.manual_seed(0)
    net = Net().eval()
    torch.jit.save(torch.jit.script(net), str(tmp_path / "net.pt"))
    with pytest.raises(ConversionError, match=r"2 LSTMs.*--list.*'encoder\.', 'blocks\.1\.'"):
        from_torch(tmp_path / "net.pt")
    spec = from_torch(tmp_path / "net.pt", prefix="blocks.1")
    assert (spec.input_size, spec.hidden_size, spec.proj_size) == (5, 3, 2)
    _engine_vs_torch(spec, net.blocks[1], Config(5, 3, proj_size=2))
    _engine_vs_torch(from_torch(tmp_path / "net.pt", prefix="encoder."), net.encoder,
                     Config(4, 6, num_layers=2, bidirectional=True, B=2))


# ------------------------------------------------------------------------------------------ Silero


def _silero_pairs():
    """silero_vad.jit holds a 16 kHz and an 8 kHz model, each with an nn.LSTMCell; the ONNX files hold
    the same weights as LSTM nodes (the 16 kHz one alone in silero_vad_16k_sequence.onnx, both inside
    If branches of silero_vad.onnx)."""
    return [
        ("_model.decoder.rnn.", "silero_vad_16k_sequence.onnx", None),
        ("_model.decoder.rnn.", "silero_vad.onnx", "If_0_then_branch__Inline_0__/decoder/rnn/LSTM"),
        ("_model_8k.decoder.rnn.", "silero_vad.onnx", "If_0_else_branch__Inline_0__/decoder/rnn/LSTM"),
    ]


@pytest.mark.parametrize("prefix,onnx_file,node", _silero_pairs())
def test_silero_jit_cell_matches_its_onnx(prefix, onnx_file, node):
    jit = from_torch(SILERO / "silero_vad.jit", prefix=prefix)
    ref = from_onnx(SILERO / onnx_file, node=node)
    assert jit.source["module"] == "LSTMCell"
    ours, theirs = jit.layers[0][0], ref.layers[0][0]
    np.testing.assert_array_equal(ours.W, theirs.W)
    np.testing.assert_array_equal(ours.R, theirs.R)
    np.testing.assert_allclose(ours.b, theirs.b, rtol=0, atol=1e-6)  # sums rounded once each way
    x = np.random.default_rng(3).standard_normal((20, 2, 128)).astype(np.float32)
    assert rel_err(fastlstm.Engine(jit).run(x)[0], fastlstm.Engine(ref).run(x)[0]) <= 1e-6


def test_silero_safetensors_cell_matches_torch():
    """silero_vad_16k.safetensors (the tinygrad port's weights) holds an nn.LSTMCell named lstm_cell.*.
    In silero-vad 6.2 its weights are not those of any shipped .jit or .onnx (another training), so
    the oracle is PyTorch's LSTMCell holding the file's tensors (what --verify runs)."""
    path = SILERO / "silero_vad_16k.safetensors"
    spec = from_torch(path)
    assert spec.source["prefix"] == "lstm_cell." and spec.source["module"] == "LSTMCell"
    assert (spec.input_size, spec.hidden_size, spec.num_layers) == (128, 128, 1)
    assert converters.verify(str(path), spec, fastlstm.Engine(spec))["max_rel_error"] <= TOL


def test_silero_jit_lists_both_cells():
    entries = converters.list_lstms(SILERO / "silero_vad.jit")
    assert [(e.name, e.module, e.hidden_size) for e in entries] == [
        ("_model.decoder.rnn.", "nn.LSTMCell", 128), ("_model_8k.decoder.rnn.", "nn.LSTMCell", 128)]


# ------------------------------------------------------------------------------- hostile archives


def _archive(path: Path, data_pkl: bytes, storages: dict | None = None, extra: dict | None = None):
    """A TorchScript-shaped zip: ROOT/data.pkl, code/, constants.pkl, storages ROOT/data/<key>."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("m/data.pkl", data_pkl)
        z.writestr("m/code/__torch__/m.py", "class M(Module):\n  pass\n")
        z.writestr("m/constants.pkl", pickle.dumps((), protocol=2))
        z.writestr("m/version", "3\n")
        z.writestr("m/byteorder", "little")
        for key, raw in (storages or {}).items():
            z.writestr(f"m/data/{key}", raw)
        for name, raw in (extra or {}).items():
            z.writestr(name, raw)


def _s(text: str) -> bytes:
    """A pickle BINUNICODE string."""
    raw = text.encode()
    return b"X" + len(raw).to_bytes(4, "little") + raw


def _module_pickle(attributes: bytes) -> bytes:
    """A hand-written data.pkl: one __torch__ module whose attribute dict is `attributes` (key, value ops)."""
    return b"\x80\x02c__torch__.m\nM\n)\x81}(" + attributes + b"ub."


def _tensor_pickle(offset=0, size=(4, 3), stride=(3, 1), numel=12, key="0") -> bytes:
    """A module whose weight_ih_l0 is one tensor record with these numbers (of any size)."""
    def num(v):
        return pickle.dumps(v, protocol=2)[2:-1]

    def ints(values):
        return b"(" + b"".join(num(v) for v in values) + b"t"

    return _module_pickle(
        _s("weight_ih_l0") + b"ctorch._utils\n_rebuild_tensor_v2\n("
        + b"(" + _s("storage") + b"ctorch\nFloatStorage\n" + _s(key) + _s("cpu") + num(numel) + b"tQ"
        + num(offset) + ints(size) + ints(stride)
        + b"\x89ccollections\nOrderedDict\n)RtR")


def test_hand_written_tensor_record_reads(tmp_path):
    """Control for the hostile records below: the same record with sane numbers reads."""
    data = np.arange(12, dtype="<f4")
    _archive(tmp_path / "ok.pt", _tensor_pickle(), {"0": data.tobytes()})
    tensors = read_torchscript(tmp_path / "ok.pt")
    np.testing.assert_array_equal(tensors["weight_ih_l0"], data.reshape(4, 3))
    _archive(tmp_path / "view.pt", _tensor_pickle(offset=1, size=(3, 2), stride=(1, 4)), {"0": data.tobytes()})
    np.testing.assert_array_equal(read_torchscript(tmp_path / "view.pt")["weight_ih_l0"],
                                  np.lib.stride_tricks.as_strided(data[1:], (3, 2), (4, 16)))


@pytest.mark.parametrize("record,storage,match", [
    (dict(offset=1), 48, "reads past its storage"),
    (dict(size=(4, 4)), 48, "reads past its storage"),
    (dict(stride=(100, 1)), 48, "reads past its storage"),
    (dict(numel=1000), 48, "fewer than its"),
    (dict(key="7"), 48, "missing"),
    (dict(key="../../etc/passwd"), 48, "malformed storage record"),
    (dict(size=(1 << 20, 1 << 20), stride=(0, 0)), 48, "repeats its storage"),
    (dict(offset=-1), 48, "malformed tensor record"),
    (dict(size=(1, 3), stride=(1 << 70, 1)), 48, "malformed tensor record"),  # numpy would overflow
    (dict(size=(1 << 70, 0), stride=(1, 1)), 48, "malformed tensor record"),
    (dict(numel=1 << 80), 48, "malformed storage record|fewer than"),
])
def test_lying_tensor_records_are_refused(tmp_path, record, storage, match):
    _archive(tmp_path / "bad.pt", _tensor_pickle(**record), {"0": bytes(storage)})
    with pytest.raises(ConversionError, match=match):
        from_torch(tmp_path / "bad.pt")


@pytest.mark.parametrize("how", ["root", "attribute", "in_list", "restore_type_tag"])
def test_malicious_archive_is_refused_and_runs_nothing(tmp_path, how):
    payload, marker = live_payload(tmp_path)  # checked live under plain pickle
    real = tmp_path / "real.pt"
    torch.jit.save(torch.jit.script(torch.nn.LSTM(3, 4)), str(real))
    with zipfile.ZipFile(real) as z:
        root = z.namelist()[0].split("/")[0]
        entries = {n: z.read(n) for n in z.namelist()}
    body = pickle.dumps(payload, protocol=2)[2:-1]  # the payload's opcodes, without PROTO and STOP
    if how == "root":
        evil = pickle.dumps(payload, protocol=2)
    elif how == "attribute":  # a module record with the payload as one attribute
        evil = _module_pickle(_s("weight_ih_l0") + body)
    elif how == "in_list":
        evil = pickle.dumps([{"weight_ih_l0": payload}], protocol=2)
    else:  # wrapped in an allowed global: the payload's own global is still refused
        evil = _module_pickle(_s("x") + b"ctorch.jit._pickle\nrestore_type_tag\n(" + body + _s("Tensor") + b"tR")
    entries[f"{root}/data.pkl"] = evil
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        for name, raw in entries.items():
            z.writestr(name, raw)
    with pytest.raises(ConversionError) as info:
        from_torch(path)
    assert "\n" not in str(info.value)
    assert not marker.exists(), "reading the TorchScript archive executed pickled code"


@pytest.mark.parametrize("module,name", [
    ("posix", "system"), ("builtins", "eval"), ("torch", "load"), ("torch._utils", "_rebuild_qtensor"),
    ("__builtin__", "getattr"), ("torch.jit", "load"),
])
def test_globals_outside_the_allow_list_are_named(tmp_path, module, name):
    _archive(tmp_path / "g.pt", b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")R.")
    with pytest.raises(ConversionError, match=rf"references {re.escape(module)}\.{name}, "):
        from_torch(tmp_path / "g.pt")


def test_truncated_archive_at_every_cut(tmp_path, torch_loads):
    """A cut archive has lost its zip directory, so nothing tells it from a torch.save archive: it goes to
    torch.load(weights_only=True), which refuses it; never to torch.jit.load."""
    src = tmp_path / "good.pt"
    torch.jit.save(torch.jit.script(torch.nn.LSTM(3, 4, num_layers=2)), str(src))
    data = src.read_bytes()
    for cut in range(1, len(data), max(1, len(data) // 41)):
        path = tmp_path / "cut.pt"
        path.write_bytes(data[:cut])
        with pytest.raises(ConversionError):
            from_torch(path)
    assert set(torch_loads) <= {"torch.load"}
    torch_loads.clear()


def test_archive_whose_root_is_not_a_module(tmp_path):
    _archive(tmp_path / "list.pt", pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(ConversionError, match="not a module"):
        from_torch(tmp_path / "list.pt")


def test_pickle_numbers_cannot_make_the_reader_allocate(tmp_path):
    """A LONG_BINPUT of 2**31 (the C unpickler's memo array: 16 GiB) and a BYTEARRAY8 declaring 2**40
    bytes (the Python unpickler allocates before reading) are refused by the opcode walk. Run in a
    child limited to 2 GiB of address space, so a regression fails this test instead of the machine."""
    cases = {
        "memo": b"\x80\x02)r\x00\x00\x00\x80.",  # EMPTY_TUPLE, LONG_BINPUT 2**31
        "bytearray": b"\x80\x05\x96" + (1 << 40).to_bytes(8, "little") + b"abc.",  # BYTEARRAY8
    }
    for name, data in cases.items():
        _archive(tmp_path / f"{name}.pt", data)
    code = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        from converters import from_torch
        from fastlstm import ConversionError
        for name in {list(cases)!r}:
            try:
                from_torch(f"{tmp_path}/{{name}}.pt")
            except ConversionError as exc:
                assert "MemoryError" not in str(exc), exc
                print(name, "refused:", str(exc).split("corrupt?): ")[-1][:160])
            else:
                sys.exit(f"{{name}}: not refused")
    """)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("refused: ") == 2 and "memo index 2147483648" in proc.stdout, proc.stdout


def test_mutated_data_pickle_is_refused_or_read(tmp_path):
    """Random byte edits of a real archive's data.pkl: every outcome is a spec or a ConversionError."""
    src = tmp_path / "src.pt"
    torch.jit.save(torch.jit.script(torch.nn.LSTM(3, 4, num_layers=2, proj_size=2)), str(src))
    with zipfile.ZipFile(src) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    root = next(iter(entries)).split("/")[0]
    original = entries[f"{root}/data.pkl"]
    rng = np.random.default_rng(16)
    outcomes = {"spec": 0, "refused": 0}
    for _ in range(300):
        data = bytearray(original)
        for _ in range(int(rng.integers(1, 6))):
            pos = int(rng.integers(0, len(data)))
            action = int(rng.integers(0, 3))
            if action == 0:
                data[pos] = int(rng.integers(0, 256))
            elif action == 1:
                del data[pos]
            else:
                data.insert(pos, int(rng.integers(0, 256)))
        entries[f"{root}/data.pkl"] = bytes(data)
        path = tmp_path / "mutated.pt"
        with zipfile.ZipFile(path, "w") as z:
            for name, raw in entries.items():
                z.writestr(name, raw)
        try:
            from_torch(path)
            outcomes["spec"] += 1
        except ConversionError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 200, outcomes
