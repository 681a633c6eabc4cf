"""converters.torch_import: PyTorch nn.LSTM / state_dict / .pt / .safetensors -> ModelSpec and back."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")

from torch_models import (  # noqa: E402
    CONFIGS,
    TOL,
    Booby,
    Config,
    TwoLSTMs,
    make_inputs,
    make_lstm,
    rel_err,
    run_torch,
    spec_forward64,
    torch_state_to_ld,
)

from converters import torch_import  # noqa: E402
from converters.torch_import import from_torch, to_torch  # noqa: E402
from fastlstm import CellOptions, ConversionError, DirectionSpec, ModelSpec  # noqa: E402

try:  # the shared float64 reference (written alongside); the local oracle covers us until it lands
    from reference import reference_run
except ImportError:  # pragma: no cover - depends on checkout state
    reference_run = None


def _ld_state(cfg: Config, state):
    if state is None:
        return None, None
    return torch_state_to_ld(state, cfg.num_layers, cfg.D)


def _check_against_torch(spec, lstm, cfg: Config, oracle):
    """Run `oracle(spec, x, h0, c0)` and compare y, h_n, c_n with PyTorch float32; return worst error."""
    x, state = make_inputs(cfg)
    y_t, h_t, c_t = run_torch(lstm, x, state)
    h0, c0 = _ld_state(cfg, state)
    y, hT, cT = oracle(spec, x, h0, c0)
    h_ref, c_ref = torch_state_to_ld((h_t, c_t), cfg.num_layers, cfg.D)
    errs = {"y": rel_err(y, y_t), "h": rel_err(hT, h_ref), "c": rel_err(cT, c_ref)}
    assert max(errs.values()) <= TOL, errs
    return max(errs.values())


def _assert_specs_equal(a: ModelSpec, b: ModelSpec):
    for name in ("input_size", "hidden_size", "num_layers", "num_directions", "proj_size"):
        assert getattr(a, name) == getattr(b, name), name
    for la, lb in zip(a.layers, b.layers, strict=True):
        for da, db in zip(la, lb, strict=True):
            for field in ("W", "R", "b", "proj", "peephole"):
                va, vb = getattr(da, field), getattr(db, field)
                assert (va is None) == (vb is None), field
                if va is not None:
                    assert va.dtype == vb.dtype == np.float32 and va.flags.c_contiguous
                    np.testing.assert_array_equal(va, vb, err_msg=field)
            assert da.options == db.options and bool(da.reverse) == bool(db.reverse)


# ---------------------------------------------------------------------------------------------
# numerics: spec vs nn.LSTM


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_spec_matches_torch_local_oracle(cfg):
    lstm = make_lstm(cfg)
    spec = from_torch(lstm)
    assert (spec.input_size, spec.hidden_size, spec.num_layers, spec.num_directions, spec.proj_size) == (
        cfg.input_size, cfg.hidden_size, cfg.num_layers, cfg.D, cfg.proj_size)
    _check_against_torch(spec, lstm, cfg, spec_forward64)


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_spec_matches_torch_float64(cfg):
    """Tighter: torch in float64 vs the float64 oracle isolates the converter from float32 rounding.
    The only float32 step left is the pre-summed bias (one rounding), hence 1e-6."""
    lstm = make_lstm(cfg)
    spec = from_torch(lstm)
    x, state = make_inputs(cfg)
    y_t, h_t, c_t = run_torch(lstm, x, state, dtype=torch.float64)
    y, hT, cT = spec_forward64(spec, x, *_ld_state(cfg, state))
    assert rel_err(y, y_t) < 1e-6
    h_ref, c_ref = torch_state_to_ld((h_t, c_t), cfg.num_layers, cfg.D)
    assert rel_err(hT, h_ref) < 1e-6 and rel_err(cT, c_ref) < 1e-6


@pytest.mark.skipif(reference_run is None, reason="tests/reference.py not written yet")
@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_spec_matches_torch_shared_reference(cfg):
    lstm = make_lstm(cfg)

    def oracle(spec, x, h0, c0):
        return reference_run(spec, x, h0, c0, None)

    _check_against_torch(from_torch(lstm), lstm, cfg, oracle)


def test_layout_is_torch_layout():
    """Gate order stays i, f, g, o; W/R are the tensors themselves; b is the sum of both biases."""
    cfg = Config(3, 5, num_layers=2, bidirectional=True, proj_size=2)
    lstm = make_lstm(cfg)
    spec = from_torch(lstm)
    sd = {k: v.numpy() for k, v in lstm.state_dict().items()}
    for l in range(2):
        for d, sfx in enumerate(("", "_reverse")):
            ds = spec.layers[l][d]
            np.testing.assert_array_equal(ds.W, sd[f"weight_ih_l{l}{sfx}"])
            np.testing.assert_array_equal(ds.R, sd[f"weight_hh_l{l}{sfx}"])
            np.testing.assert_array_equal(ds.proj, sd[f"weight_hr_l{l}{sfx}"])
            np.testing.assert_allclose(ds.b, sd[f"bias_ih_l{l}{sfx}"] + sd[f"bias_hh_l{l}{sfx}"], rtol=1e-7)
            assert ds.reverse == bool(d) and ds.options.is_default and ds.peephole is None


def test_spec_does_not_alias_module_weights():
    lstm = make_lstm(Config(3, 4))
    spec = from_torch(lstm)
    before = spec.layers[0][0].W.copy()
    with torch.no_grad():
        lstm.weight_ih_l0.add_(1.0)
    np.testing.assert_array_equal(spec.layers[0][0].W, before)


def test_bias_false_gives_zero_bias():
    lstm = make_lstm(Config(4, 3, num_layers=2, bias=False))
    spec = from_torch(lstm)
    for layer in spec.layers:
        assert not layer[0].b.any() and layer[0].b.shape == (12,)


# ---------------------------------------------------------------------------------------------
# input forms

CFG = Config(5, 6, num_layers=2, bidirectional=True, proj_size=4, B=2, init=True)


@pytest.fixture(scope="module")
def ref_lstm():
    return make_lstm(CFG, seed=7)


@pytest.fixture(scope="module")
def ref_spec(ref_lstm):
    return from_torch(ref_lstm)


def test_source_module(ref_lstm, ref_spec):
    assert ref_spec.source["format"] == "torch" and ref_spec.source["prefix"] == ""
    assert ref_spec.source["file"] is None
    assert ref_spec.source["torch_version"] == torch.__version__
    _check_against_torch(ref_spec, ref_lstm, CFG, spec_forward64)


def test_source_state_dict(ref_lstm, ref_spec):
    _assert_specs_equal(from_torch(ref_lstm.state_dict()), ref_spec)


def test_source_numpy_state_dict(ref_lstm, ref_spec):
    sd = {k: v.numpy().copy() for k, v in ref_lstm.state_dict().items()}
    _assert_specs_equal(from_torch(sd), ref_spec)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_source_other_float_dtypes(ref_lstm, dtype):
    sd = {k: v.to(getattr(torch, dtype)) for k, v in ref_lstm.state_dict().items()}
    spec = from_torch(sd)
    expected = {k: v.float().numpy() for k, v in sd.items()}
    ds = spec.layers[1][1]
    assert ds.W.dtype == np.float32
    np.testing.assert_array_equal(ds.W, expected["weight_ih_l1_reverse"])
    b = expected["bias_ih_l1_reverse"].astype(np.float64) + expected["bias_hh_l1_reverse"]
    np.testing.assert_allclose(ds.b, b, rtol=1e-7)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
def test_source_pt_file(tmp_path, ref_lstm, ref_spec, suffix):
    path = tmp_path / f"model{suffix}"
    torch.save(ref_lstm.state_dict(), path)
    spec = from_torch(str(path))
    _assert_specs_equal(spec, ref_spec)
    assert spec.source["file"] == path.name
    _assert_specs_equal(from_torch(path), ref_spec)  # pathlib.Path works too


def test_source_legacy_pt_file(tmp_path, ref_lstm, ref_spec):
    path = tmp_path / "legacy.pt"
    torch.save(ref_lstm.state_dict(), path, _use_new_zipfile_serialization=False)
    _assert_specs_equal(from_torch(path), ref_spec)


def test_source_checkpoint_with_nested_state_dict(tmp_path, ref_lstm, ref_spec):
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 12, "lr": 1e-3, "state_dict": ref_lstm.state_dict(), "note": "best"}, path)
    spec = from_torch(path)
    _assert_specs_equal(spec, ref_spec)
    assert spec.source["container"] == "state_dict"


def test_source_checkpoint_with_two_models_needs_prefix(tmp_path, ref_lstm, ref_spec):
    other = make_lstm(CFG, seed=99)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": ref_lstm.state_dict(), "ema": other.state_dict()}, path)
    with pytest.raises(ConversionError, match=r"2 LSTMs.*'model\.'.*'ema\.'|2 LSTMs.*'ema\.'.*'model\.'"):
        from_torch(path)
    _assert_specs_equal(from_torch(path, prefix="model"), ref_spec)
    _assert_specs_equal(from_torch(path, prefix="ema."), from_torch(other))


def test_source_safetensors(tmp_path, ref_lstm, ref_spec):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in ref_lstm.state_dict().items()}, str(path))
    spec = from_torch(path)
    _assert_specs_equal(spec, ref_spec)
    assert spec.source["file"] == "model.safetensors"


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
def test_own_safetensors_parser(tmp_path, ref_lstm, dtype):
    """The fallback reader (no safetensors package) gives the same arrays as the package."""
    from safetensors.torch import save_file

    sd = {k: v.to(getattr(torch, dtype)).contiguous() for k, v in ref_lstm.state_dict().items()}
    path = tmp_path / "m.safetensors"
    save_file(sd, str(path), metadata={"who": "test"})
    parsed = torch_import._parse_safetensors(path)
    assert set(parsed) == set(sd)
    for k, v in sd.items():
        np.testing.assert_array_equal(parsed[k].astype(np.float32), v.float().numpy())
    _assert_specs_equal(from_torch(parsed), from_torch(sd))


def test_safetensors_without_package(tmp_path, ref_lstm, ref_spec, monkeypatch):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in ref_lstm.state_dict().items()}, str(path))
    for name in ("safetensors", "safetensors.torch"):  # import -> ImportError
        monkeypatch.setitem(sys.modules, name, None)
    calls = []
    parse = torch_import._parse_safetensors
    monkeypatch.setattr(torch_import, "_parse_safetensors", lambda p: calls.append(p) or parse(p))
    _assert_specs_equal(from_torch(path), ref_spec)
    assert calls == [path]


def test_numpy_and_safetensors_sources_need_no_torch(tmp_path, ref_lstm):
    """torch is optional: a numpy state_dict and a .safetensors file convert without it."""
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in ref_lstm.state_dict().items()}
    save_file(sd, str(tmp_path / "m.safetensors"))
    np.savez(tmp_path / "sd.npz", **{k: v.numpy() for k, v in sd.items()})
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from converters.torch_import import from_torch, to_torch\n"
        f"a = from_torch(dict(np.load({str(tmp_path / 'sd.npz')!r})))\n"
        f"b = from_torch({str(tmp_path / 'm.safetensors')!r})\n"
        "assert np.array_equal(a.layers[1][1].W, b.layers[1][1].W)\n"
        "try:\n    to_torch(a)\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ConversionError to_torch needs PyTorch")


@pytest.fixture(scope="module")
def two_lstms():
    return TwoLSTMs().eval()


@pytest.mark.parametrize("prefix", ["encoder.lstm", "encoder.lstm."])
def test_bigger_module_with_prefix(two_lstms, prefix):
    spec = from_torch(two_lstms, prefix=prefix)
    assert spec.source["prefix"] == "encoder.lstm."
    assert (spec.input_size, spec.hidden_size, spec.num_layers, spec.num_directions) == (4, 6, 2, 2)
    _assert_specs_equal(spec, from_torch(two_lstms.encoder.lstm))


@pytest.mark.parametrize("as_state_dict", [False, True])
def test_bigger_model_second_lstm(two_lstms, as_state_dict):
    src = two_lstms.state_dict() if as_state_dict else two_lstms
    spec = from_torch(src, prefix="decoder")
    assert (spec.input_size, spec.hidden_size, spec.proj_size) == (5, 7, 3)
    if not as_state_dict:
        assert spec.source["batch_first"] is True
    cfg = Config(5, 7, proj_size=3, B=2, init=True)
    _check_against_torch(spec, two_lstms.decoder, cfg, spec_forward64)


def test_bigger_model_file_with_prefix(tmp_path, two_lstms):
    path = tmp_path / "big.pt"
    torch.save(two_lstms.state_dict(), path)
    spec = from_torch(path, prefix="decoder.")
    _assert_specs_equal(spec, from_torch(two_lstms.decoder))
    assert spec.source == {"format": "torch", "prefix": "decoder.", "file": "big.pt",
                           "torch_version": torch.__version__}


def test_module_with_parametrized_weights():
    """weight_norm keeps weight_hh_l1 out of state_dict(); the module's effective matrix is used."""
    from torch.nn.utils import parametrizations

    cfg = Config(3, 5, num_layers=2, B=2)
    lstm = make_lstm(cfg)
    parametrizations.weight_norm(lstm, "weight_hh_l1")
    assert "weight_hh_l1" not in lstm.state_dict()
    spec = from_torch(lstm)
    np.testing.assert_array_equal(spec.layers[1][0].R, lstm.weight_hh_l1.detach().numpy())
    _check_against_torch(spec, lstm, cfg, spec_forward64)


def test_module_with_gru_and_lstm_picks_the_lstm():
    model = torch.nn.Module()
    model.gru = torch.nn.GRU(3, 4)
    model.rnn = torch.nn.RNN(3, 4)
    model.lstm = torch.nn.LSTM(3, 4)
    for src in (model, model.state_dict()):
        assert from_torch(src).source["prefix"] == "lstm."


# ---------------------------------------------------------------------------------------------
# errors


def test_error_several_lstms_without_prefix(two_lstms):
    for src in (two_lstms, two_lstms.state_dict()):
        with pytest.raises(ConversionError, match=r"2 LSTMs.*prefix.*'encoder\.lstm\.'.*'decoder\.'"):
            from_torch(src)


def test_error_unknown_prefix(two_lstms):
    with pytest.raises(ConversionError, match=r"no LSTM with prefix 'encoder\.'.*'encoder\.lstm\.'"):
        from_torch(two_lstms, prefix="encoder")
    with pytest.raises(ConversionError, match="available"):
        from_torch(two_lstms.state_dict(), prefix="mid.")


def test_error_prefix_points_at_a_gru():
    model = torch.nn.Module()
    model.gru = torch.nn.GRU(3, 4)
    model.lstm = torch.nn.LSTM(3, 4)
    with pytest.raises(ConversionError, match="GRU-shaped"):
        from_torch(model.state_dict(), prefix="gru")


def test_error_no_lstm_tensors():
    with pytest.raises(ConversionError, match="no LSTM tensors found"):
        from_torch(torch.nn.Linear(3, 4))
    with pytest.raises(ConversionError, match="no LSTM tensors found.*GRU/RNN"):
        from_torch(torch.nn.GRU(3, 4).state_dict())
    with pytest.raises(ConversionError, match="no LSTM tensors found"):
        from_torch({})


def _sd(cfg: Config, seed: int = 0) -> dict:
    return dict(make_lstm(cfg, seed).state_dict())


def test_error_missing_weight_hh():
    sd = _sd(Config(3, 4, num_layers=2))
    del sd["weight_hh_l1"]
    with pytest.raises(ConversionError, match=r"missing tensor weight_hh_l1.*found \['weight_ih_l1'"):
        from_torch(sd)


def test_error_missing_layer():
    sd = _sd(Config(3, 4, num_layers=3))
    for k in [k for k in sd if k.endswith("_l1")]:
        del sd[k]
    with pytest.raises(ConversionError, match=r"layers \[0, 2\].*layer\(s\) \[1\]"):
        from_torch(sd)


def test_error_missing_reverse_tensor():
    sd = _sd(Config(3, 4, num_layers=2, bidirectional=True))
    del sd["weight_ih_l1_reverse"]
    with pytest.raises(ConversionError, match="missing tensor weight_ih_l1_reverse"):
        from_torch(sd)


def test_error_half_a_bias():
    sd = _sd(Config(3, 4))
    del sd["bias_hh_l0"]
    with pytest.raises(ConversionError, match="missing tensor bias_hh_l0"):
        from_torch(sd)


def test_error_projection_on_one_layer_only():
    sd = _sd(Config(3, 6, num_layers=2, proj_size=2))
    del sd["weight_hr_l1"]
    with pytest.raises(ConversionError, match="missing tensor weight_hr_l1.*projection"):
        from_torch(sd)


# One tensor of a valid state_dict replaced by a wrongly shaped one: (config, name, shape, message).
_WRONG_SHAPES = {
    "hidden rows not a multiple of 4": (Config(3, 4), "weight_hh_l0", (15, 4),
                                        r"weight_hh_l0: expected 4\*hidden_size rows.*\(15, 4\)"),
    "weight_hh not square per gate": (Config(3, 4), "weight_hh_l0", (16, 5),
                                      r"expected shape \(16, 4\).*found \(16, 5\)"),
    # layer 1 should take 2 directions x 4 = 8 inputs
    "layer 1 input size": (Config(3, 4, num_layers=2, bidirectional=True), "weight_ih_l1", (16, 4),
                           r"weight_ih_l1: expected shape \(16, 8\).*found \(16, 4\).*2 dir"),
    "bias shape": (Config(3, 4), "bias_ih_l0", (12,), r"bias_ih_l0: expected shape \(16,\).*found \(12,\)"),
    "wrong ndim": (Config(3, 4), "weight_ih_l0", (16, 3, 1), r"weight_ih_l0: expected a 2-D tensor"),
    "reverse shape differs": (Config(3, 4, bidirectional=True), "weight_ih_l0_reverse", (16, 5),
                              r"weight_ih_l0_reverse: expected shape \(16, 3\)"),
}


@pytest.mark.parametrize("case", list(_WRONG_SHAPES))
def test_error_wrong_tensor_shape(case):
    config, name, shape, expected = _WRONG_SHAPES[case]
    sd = _sd(config)
    sd[name] = torch.zeros(*shape)
    with pytest.raises(ConversionError, match=expected):
        from_torch(sd)


def test_error_projection_not_smaller():
    sd = _sd(Config(3, 4))
    sd["weight_hh_l0"] = torch.zeros(16, 6)
    sd["weight_hr_l0"] = torch.zeros(6, 4)
    with pytest.raises(ConversionError, match="proj_size < hidden_size"):
        from_torch(sd)


def test_error_non_float_tensor():
    sd = _sd(Config(3, 4))
    sd["weight_ih_l0"] = torch.ones(16, 3, dtype=torch.int32)
    with pytest.raises(ConversionError, match="weight_ih_l0: expected a floating point tensor, found torch"):
        from_torch(sd)
    sd["weight_ih_l0"] = np.ones((16, 3), dtype=np.int64)
    with pytest.raises(ConversionError, match="floating point array, found int64"):
        from_torch(sd)
    sd["weight_ih_l0"] = [[0.0] * 3] * 16
    with pytest.raises(ConversionError, match="expected a tensor or array, found list"):
        from_torch(sd)


def test_error_bad_source_type():
    with pytest.raises(ConversionError, match="expects an nn.Module, a state_dict or a file path"):
        from_torch(42)


def test_error_missing_file(tmp_path):
    with pytest.raises(ConversionError, match="no such file"):
        from_torch(tmp_path / "nope.pt")
    with pytest.raises(ConversionError, match="not a file"):
        from_torch(tmp_path)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".safetensors", ""])
def test_error_empty_file(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(b"")
    with pytest.raises(ConversionError, match="empty"):
        from_torch(path)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".safetensors", ".weights"])
def test_error_garbage_file(tmp_path, suffix):
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ConversionError, match="not a"):
        from_torch(path)


def test_error_text_file(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("this is not a model\n")
    with pytest.raises(ConversionError, match="not a PyTorch file"):
        from_torch(path)


def test_error_garbage_after_pickle_marker(tmp_path):
    """Bytes that pass the sniffing (pickle opcode first) still end as a ConversionError."""
    path = tmp_path / "fake.pt"
    path.write_bytes(b"\x80\x02" + np.random.default_rng(1).bytes(500))
    with pytest.raises(ConversionError, match="not a readable PyTorch file"):
        from_torch(path)


def test_error_truncated_pt(tmp_path, ref_lstm):
    path = tmp_path / "model.pt"
    torch.save(ref_lstm.state_dict(), path)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 30, 100):
        path.write_bytes(data[:cut])
        with pytest.raises(ConversionError, match="not a readable PyTorch file"):
            from_torch(path)


def test_error_truncated_safetensors(tmp_path, ref_lstm):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in ref_lstm.state_dict().items()}, str(path))
    data = path.read_bytes()
    for cut in (len(data) - 7, 12, 5):
        path.write_bytes(data[:cut])
        with pytest.raises(ConversionError, match="safetensors"):
            from_torch(path)
        with pytest.raises(ConversionError, match="safetensors"):
            torch_import._parse_safetensors(path)


def test_error_safetensors_bad_header(tmp_path):
    path = tmp_path / "bad.safetensors"
    header = b'{"weight_ih_l0": {"dtype": "F32", "shape": [16, 3], "data_offsets": [0, 10]}}'
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(10))
    for reader in (from_torch, torch_import._parse_safetensors):
        with pytest.raises(ConversionError):
            reader(path)
    path.write_bytes((5).to_bytes(8, "little") + b"[1,2]")
    with pytest.raises(ConversionError, match="not a JSON object"):
        torch_import._parse_safetensors(path)


def test_error_onnx_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07\x12\x07pytorch")
    with pytest.raises(ConversionError, match="from_onnx"):
        from_torch(path)


def test_pickled_object_is_refused_and_never_executed(tmp_path, ref_lstm):
    marker = tmp_path / "payload_ran"
    booby = Booby(str(marker))
    # Control: the payload is live, a plain unpickle runs it.
    pickle.loads(pickle.dumps(booby))
    assert marker.exists()
    marker.unlink()

    payloads = [booby, {"weight_ih_l0": booby}, {"state_dict": ref_lstm.state_dict(), "x": booby}]
    for i, obj in enumerate(payloads):
        path = tmp_path / f"evil{i}.pt"
        torch.save(obj, path)
        with pytest.raises(ConversionError, match=r"Python objects.*_create_marker.*weights_only"):
            from_torch(path)
        assert not marker.exists(), "from_torch executed pickle code"


def test_pickled_whole_module_is_refused(tmp_path, ref_lstm):
    path = tmp_path / "whole.pt"
    torch.save(ref_lstm, path)
    with pytest.raises(ConversionError, match=r"torch\.nn\.modules\.rnn\.LSTM.*weights_only.*state_dict\(\)"):
        from_torch(path)


def test_pt_holding_a_tensor_not_a_dict(tmp_path):
    path = tmp_path / "t.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(ConversionError, match="expected a state_dict.*Tensor"):
        from_torch(path)


def test_errors_are_value_errors():
    assert issubclass(ConversionError, ValueError)


# ---------------------------------------------------------------------------------------------
# to_torch and round trips


def _random_spec(I=4, H=5, L=2, D=2, P=0, seed=0) -> ModelSpec:
    rng = np.random.default_rng(seed)
    Hout = P or H
    layers = []
    for l in range(L):
        n_in = I if l == 0 else D * Hout
        layers.append([DirectionSpec(
            W=rng.standard_normal((4 * H, n_in)).astype(np.float32),
            R=rng.standard_normal((4 * H, Hout)).astype(np.float32),
            b=rng.standard_normal(4 * H).astype(np.float32),
            proj=rng.standard_normal((Hout, H)).astype(np.float32) if P else None,
            reverse=bool(d),
        ) for d in range(D)])
    return ModelSpec(I, H, L, D, P, layers).validate()


@pytest.mark.parametrize("shape", [(4, 5, 1, 1, 0), (4, 5, 2, 2, 0), (3, 6, 3, 2, 2), (7, 3, 2, 1, 2)])
def test_round_trip_spec_torch_spec(shape):
    spec = _random_spec(*shape)
    lstm = to_torch(spec)
    assert isinstance(lstm, torch.nn.LSTM) and not lstm.batch_first and not lstm.training
    _assert_specs_equal(from_torch(lstm), spec)


@pytest.mark.parametrize("cfg", CONFIGS[:4], ids=str)
def test_round_trip_torch_spec_torch(cfg):
    lstm = make_lstm(cfg)
    back = to_torch(from_torch(lstm))
    x, state = make_inputs(cfg)
    for a, b in zip(run_torch(lstm, x, state), run_torch(back, x, state), strict=True):
        assert rel_err(b, a) <= 1e-6


def test_to_torch_rejects_what_torch_cannot_express():
    def variant(**kw):
        spec = _random_spec(D=1, L=1)
        ds = spec.layers[0][0]
        for k, v in kw.items():
            setattr(ds, k, v)
        return spec

    cases = {
        "peephole": variant(peephole=np.zeros((3, 5), np.float32)),
        "default cell": variant(options=CellOptions.make(activations=["HardSigmoid", "Tanh", "Tanh"])),
        "clip": variant(options=CellOptions.make(clip=3.0)),
        "input_forget": variant(options=CellOptions.make(input_forget=True)),
        "single reverse": variant(reverse=True),
    }
    for match, spec in cases.items():
        with pytest.raises(ConversionError, match=match):
            to_torch(spec)
