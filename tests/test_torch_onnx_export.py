"""nn.LSTM exported by both of torch.onnx.export's exporters converts as one stack (issue 16, item 0).

The dynamo exporter (torch's default since 2.9, it needs onnxscript) writes one LSTM node per layer
joined by Transpose -> Reshape, with the export's T and B fixed in the Reshape (or Shape/Slice/Mul/Concat
ops computing them for a dynamic-shape export) and constant zero initial states; the classic
(TorchScript) exporter writes Reshape(0, 0, -1) and states expanded from the input's shape. Each export
must convert with no node= into one stack that matches ONNX Runtime on the exported file and PyTorch
within 2e-5, and --verify must pass on it.

nn.LSTM(proj_size > 0) has no ONNX form: the classic exporter refuses it, the dynamo exporter writes
nodes of hidden_size = proj_size that ONNX Runtime refuses to load or run; fastlstm must refuse them too
(convert the PyTorch weights instead). If a torch release ever exports them in a form ONNX Runtime runs,
these tests fail on purpose.

onnxscript and torch are imported plainly: an exporter that cannot run fails this module, never skips it.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnxruntime as ort
import onnxscript  # noqa: F401  the dynamo exporter needs it; missing, this module must fail, not skip
import pytest
import torch
from torch_models import TOL, Config, make_inputs, make_lstm, rel_err, run_torch

import fastlstm
from converters import from_onnx, verify
from fastlstm import ConversionError

EXPORTERS = {"classic": False, "dynamo": True}

# (config, batch_first): the shapes of tests/torch_models.CONFIGS (layers 1-3, bidirectional, no bias,
# initial state), two of them batch_first; the 3-layer bidirectional one without its projection.
# Each dynamo export takes seconds: one case per feature, combined.
STACKS = [
    (Config(3, 8), False),
    (Config(5, 6, num_layers=2, bidirectional=True, B=3), True),
    (Config(6, 5, num_layers=2, bias=False, B=2), False),
    (Config(4, 7, num_layers=3, bidirectional=True, B=2, init=True, T=5), True),
]
PROJECTED = [  # one layer (its initial_c betrays it) and a bidirectional stack without bias
    Config(2, 9, proj_size=4, B=4),
    Config(10, 4, num_layers=2, bidirectional=True, bias=False, proj_size=2, T=4),
]


def _export(lstm, cfg: Config, batch_first: bool, dynamo: bool, dynamic: bool = False) -> tuple[bytes, list]:
    """The ONNX file torch writes and the inputs it was exported with (x as the module takes it)."""
    lstm.batch_first = batch_first
    x, state = make_inputs(cfg)
    x_in = np.ascontiguousarray(x.transpose(1, 0, 2)) if batch_first else x
    args = (torch.from_numpy(x_in),)
    if state is not None:
        args += (tuple(torch.from_numpy(s) for s in state),)
    kwargs = {}
    if dynamic:
        T, B = torch.export.Dim("T"), torch.export.Dim("B")
        kwargs["dynamic_shapes"] = ({0: B, 1: T} if batch_first else {0: T, 1: B},)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(lstm, args, buf, dynamo=dynamo, verbose=False, **kwargs)
    return buf.getvalue(), [x_in] + ([] if state is None else list(state))


def _ort_outputs(data: bytes, inputs: list) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 4
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    feeds = {i.name: v for i, v in zip(session.get_inputs(), inputs, strict=True)}
    return session.run(None, feeds)


def _check_stack(data: bytes, inputs: list, lstm, cfg: Config, batch_first: bool):
    spec = from_onnx(data)  # no node=: the chain must be found
    assert (spec.num_layers, spec.num_directions, spec.hidden_size) == (cfg.num_layers, cfg.D, cfg.hidden_size)
    assert len(spec.source["node"]) == cfg.num_layers
    assert spec.source["batch_first"] is batch_first
    L, D, H = cfg.num_layers, cfg.D, cfg.hidden_size
    x = inputs[0].transpose(1, 0, 2) if batch_first else inputs[0]  # (T, B, I)
    eng = fastlstm.Engine(spec)
    state = None
    if len(inputs) == 3:
        state = eng.new_state(cfg.B)
        state.h[...] = inputs[1].reshape(L, D, cfg.B, H)
        state.c[...] = inputs[2].reshape(L, D, cfg.B, H)
    y, final = eng.run(x, state=state)

    y_ort, h_ort, c_ort = _ort_outputs(data, inputs)
    if batch_first:
        y_ort = y_ort.transpose(1, 0, 2)
    assert rel_err(y, y_ort) <= TOL
    assert rel_err(final.h.reshape(L * D, cfg.B, H), h_ort) <= TOL
    assert rel_err(final.c.reshape(L * D, cfg.B, H), c_ort) <= TOL

    y_pt, h_pt, c_pt = run_torch(lstm, x, None if len(inputs) == 1 else tuple(inputs[1:]))
    assert rel_err(y, y_pt) <= TOL
    assert rel_err(final.h.reshape(L * D, cfg.B, H), h_pt) <= TOL
    assert rel_err(final.c.reshape(L * D, cfg.B, H), c_pt) <= TOL

    measured = verify(data, spec, eng)  # ORT on the file's own chain, at the sizes its Reshape fixes
    assert measured["max_rel_error"] <= TOL
    return spec, measured


@pytest.mark.parametrize("exporter", list(EXPORTERS))
@pytest.mark.parametrize("cfg,batch_first", STACKS, ids=[f"{c}-{'bf' if bf else 'tm'}" for c, bf in STACKS])
def test_exported_stack_converts_as_one(cfg, batch_first, exporter):
    lstm = make_lstm(cfg, seed=5)
    data, inputs = _export(lstm, cfg, batch_first, EXPORTERS[exporter])
    spec, measured = _check_stack(data, inputs, lstm, cfg, batch_first)
    if exporter == "dynamo" and cfg.num_layers > 1:  # the Reshape fixes the export's sizes
        assert measured["input_shape"] == [cfg.T, cfg.B, cfg.input_size]


def test_dynamo_dynamic_shape_export():
    """With dynamic T and B the dynamo exporter computes the Reshape target (Shape, Slice, Mul, Concat)
    and the initial states (Expand of zeros to the input's batch): both must be understood."""
    cfg = Config(5, 6, num_layers=2, bidirectional=True, B=3)
    lstm = make_lstm(cfg, seed=6)
    data, inputs = _export(lstm, cfg, True, dynamo=True, dynamic=True)
    _, measured = _check_stack(data, inputs, lstm, cfg, True)
    assert measured["input_shape"][:2] == [16, 2]  # verify's own sizes: nothing in the file fixes them


@pytest.mark.parametrize("cfg", PROJECTED, ids=str)
def test_projection_has_no_onnx_form(cfg):
    lstm = make_lstm(cfg, seed=7)
    with pytest.raises(Exception, match="projections"):  # the classic exporter refuses outright
        _export(lstm, cfg, False, dynamo=False)
    data, inputs = _export(lstm, cfg, False, dynamo=True)
    with pytest.raises(Exception):  # noqa: B017  ORT refuses the file (at load or at run): any of its errors
        _ort_outputs(data, inputs)
    with pytest.raises(ConversionError, match=r"proj_size.*convert the PyTorch weights instead"):
        from_onnx(data)
