"""nn.LSTMCell weights, stacks of numbered cells, and --prefix as the user sees it in nested checkpoints
(issue 16, items 3 and 4). Oracle: PyTorch's nn.LSTMCell stepped over time, nn.LSTM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch_models import TOL, Config, make_inputs, make_lstm, rel_err, run_torch

import converters
import fastlstm
from converters import from_torch
from fastlstm import ConversionError


def _cells(sizes, bias=True, seed=0):
    """nn.LSTMCell per (input, hidden) pair, weights scaled up so they matter."""
    torch.manual_seed(seed)
    cells = torch.nn.ModuleList([torch.nn.LSTMCell(i, h, bias=bias) for i, h in sizes])
    with torch.no_grad():
        for p in cells.parameters():
            p.mul_(3.0)
    return cells.eval()


def _step_cells(cells, x: np.ndarray) -> np.ndarray:
    """y (T, B, H) of cell k reading cell k-1's h at every step, from zero states."""
    T, B, _ = x.shape
    h = [torch.zeros(B, c.hidden_size) for c in cells]
    c = [torch.zeros(B, c.hidden_size) for c in cells]
    out = []
    with torch.no_grad():
        for t in range(T):
            inp = torch.from_numpy(x[t])
            for k, cell in enumerate(cells):
                h[k], c[k] = cell(inp, (h[k], c[k]))
                inp = h[k]
            out.append(inp.numpy().copy())
    return np.stack(out)


X = np.random.default_rng(5).standard_normal((9, 3, 4)).astype(np.float32)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("form", ["module", "state_dict", "safetensors"])
def test_lstm_cell_converts_as_one_layer(tmp_path, form, bias):
    cell = _cells([(4, 6)], bias=bias)[0]
    if form == "module":
        source = cell
    elif form == "state_dict":
        source = {f"decoder.rnn.{k}": v for k, v in cell.state_dict().items()}
    else:
        source = tmp_path / "cell.safetensors"
        save_file({f"decoder.rnn.{k}": v.contiguous() for k, v in cell.state_dict().items()}, str(source))
    spec = from_torch(source)
    assert (spec.num_layers, spec.num_directions, spec.input_size, spec.hidden_size) == (1, 1, 4, 6)
    assert spec.source["module"] == "LSTMCell"
    y, _ = fastlstm.Engine(spec).run(X)
    assert rel_err(y, _step_cells([cell], X)) <= TOL
    if form != "module":
        assert converters.verify(source if form == "state_dict" else str(source), spec,
                                 fastlstm.Engine(spec))["max_rel_error"] <= TOL


def test_gru_cell_is_not_an_lstm():
    torch.manual_seed(0)
    sd = {f"rnn.{k}": v for k, v in torch.nn.GRUCell(4, 6).state_dict().items()}
    with pytest.raises(ConversionError, match=r"only GRU/RNN-shaped weights under 'rnn\.'"):
        from_torch(sd)


def test_cell_stack_converts_as_layers_when_asked():
    cells = _cells([(4, 5), (5, 5), (5, 5)], seed=1)
    sd = {f"cells.{k}": v for k, v in cells.state_dict().items()}
    with pytest.raises(ConversionError, match=r"'cells\.0\.', 'cells\.1\.', 'cells\.2\.', 'cells\.' \(the 3 cells"):
        from_torch(sd)
    spec = from_torch(sd, prefix="cells")
    assert (spec.num_layers, spec.input_size, spec.hidden_size) == (3, 4, 5)
    assert spec.source["module"] == "stack of 3 LSTMCell"
    y, _ = fastlstm.Engine(spec).run(X)
    assert rel_err(y, _step_cells(cells, X)) <= TOL
    assert converters.verify(sd, spec, fastlstm.Engine(spec))["max_rel_error"] <= TOL
    one = from_torch(sd, prefix="cells.1.")  # each cell alone still converts
    assert (one.num_layers, one.input_size) == (1, 5)


def test_cell_stack_of_a_module():
    class Stacked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cells = _cells([(4, 5), (5, 5)], seed=2)

    model = Stacked()
    spec = from_torch(model, prefix="cells.")
    assert rel_err(fastlstm.Engine(spec).run(X)[0], _step_cells(model.cells, X)) <= TOL


@pytest.mark.parametrize("sizes,names,match", [
    ([(4, 5), (5, 6)], None, r"cells\.1\.weight_ih: expected shape \(20, 5\).*found \(24, 5\)"),  # hidden differs
    ([(4, 5), (4, 5)], None, r"cells\.1\.weight_ih: expected shape \(20, 5\).*previous layer"),  # input != hidden
    ([(4, 5), (5, 5)], ["cells.0.", "cells.2."], r"no LSTM with prefix 'cells\.'"),  # not numbered 0..N-1
])
def test_cell_stack_must_chain(sizes, names, match):
    cells = _cells(sizes)
    names = names or [f"cells.{k}." for k in range(len(sizes))]
    sd = {f"{name}{k}": v for name, cell in zip(names, cells, strict=True) for k, v in cell.state_dict().items()}
    with pytest.raises(ConversionError, match=match):
        from_torch(sd, prefix="cells.")


def test_cell_and_lstm_names_under_one_prefix_are_refused():
    sd = {"rnn.weight_ih": torch.zeros(8, 3), "rnn.weight_hh": torch.zeros(8, 2),
          "rnn.weight_ih_l0": torch.zeros(8, 3), "rnn.weight_hh_l0": torch.zeros(8, 2)}
    with pytest.raises(ConversionError, match="mixes nn.LSTM names"):
        from_torch(sd)


# ------------------------------------------------------------------------------------ prefixes


@pytest.fixture(scope="module")
def lstm():
    return make_lstm(Config(3, 5, num_layers=2), seed=3)


def _nest(keys: list[str], inner: dict) -> dict:
    out = inner
    for key in reversed(keys):
        out = {key: out, "epoch": 7}
    return out


@pytest.mark.parametrize("keys,module_prefix", [
    (["model_state"], "lstm."),
    (["state_dict"], "module.encoder.rnn."),
    (["checkpoint", "model"], "rnn."),
    (["model_state_dict"], ""),
])
def test_nested_checkpoint_prefix_in_full_and_inner_form(tmp_path, lstm, keys, module_prefix):
    ckpt = _nest(keys, {f"{module_prefix}{k}": v for k, v in lstm.state_dict().items()})
    path = tmp_path / "ckpt.pt"
    torch.save(ckpt, path)
    full = ".".join(keys) + "." + module_prefix
    x, _ = make_inputs(Config(3, 5, num_layers=2, B=2))
    for prefix in {full, full.rstrip("."), module_prefix}:
        spec = from_torch(path, prefix=prefix)
        assert spec.source["prefix"] == module_prefix and spec.source["container"] == ".".join(keys)
        assert rel_err(fastlstm.Engine(spec).run(x)[0], run_torch(lstm, x)[0]) <= TOL
    assert converters.verify(str(path), spec, fastlstm.Engine(spec))["max_rel_error"] <= TOL
    with pytest.raises(ConversionError, match=rf"no LSTM with prefix .*available: '{full}'"):
        from_torch(path, prefix=".".join(keys) + ".decoder.")


def test_several_lstms_in_a_nested_checkpoint_are_listed_in_full(lstm):
    inner = {f"enc.{k}": v for k, v in lstm.state_dict().items()}
    inner.update({f"dec.{k}": v for k, v in lstm.state_dict().items()})
    with pytest.raises(ConversionError, match=r"found 2 LSTMs.*--list.*'model_state\.enc\.', 'model_state\.dec\.'"):
        from_torch({"model_state": inner})
    assert from_torch({"model_state": inner}, prefix="model_state.dec").source["prefix"] == "dec."
