"""fastlstm.Engine on converted ONNX models against ONNX Runtime on the original graphs.

Same measure as everywhere: max |ours - ORT| / max(max |ORT|, 1) <= 2e-5 on y and the final state.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
import pytest
from onnx_models import extract_lstm, make_lstm_model, onnx_y_to_time_major, ort_run
from specs import random_spec, rel_error

import fastlstm
from converters import from_onnx, to_onnx

TOL = 2e-5
I, H = 5, 12


def _engine_run(spec, x, h0=None, c0=None, lens=None):
    eng = fastlstm.Engine(spec)
    state = None
    if h0 is not None:
        state = eng.new_state(x.shape[1])
        state.h[...] = h0
        state.c[...] = c0
    y, final = eng.run(x, state=state, sequence_lens=lens)
    return y, final.h, final.c


CASES = {
    "default": {},
    "bidir_peephole": {"direction": "bidirectional", "peephole": True},
    "reverse": {"direction": "reverse"},
    "clip_input_forget": {"clip": 0.5, "input_forget": 1, "peephole": True, "scale": 1.2},
    "activations": {"direction": "bidirectional",
                    "activations": ["HardSigmoid", "Elu", "Softsign", "Sigmoid", "ScaledTanh", "Tanh"],
                    "alphas": [0.25, 0.8, 1.2], "betas": [0.5, 0.7]},
}


@pytest.mark.parametrize("lens", [None, [7, 3, 0]], ids=["full", "lens"])
@pytest.mark.parametrize("case", list(CASES))
def test_engine_single_node(case, lens):
    model, _ = make_lstm_model(I, H, seq_lens_input=True, **CASES[case])
    spec = from_onnx(model)
    D = spec.num_directions
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 3, I)).astype(np.float32)
    h0 = rng.standard_normal((D, 3, H)).astype(np.float32)
    c0 = rng.standard_normal((D, 3, H)).astype(np.float32)
    lens_arr = np.array(lens if lens else [7, 7, 7], np.int32)
    out = ort_run(model, x, h0, c0, lens_arr)
    y, hT, cT = _engine_run(spec, x, h0[None], c0[None], lens_arr)
    assert rel_error(y, onnx_y_to_time_major(out["Y"])) <= TOL
    assert rel_error(hT[0], out["Y_h"]) <= TOL
    assert rel_error(cT[0], out["Y_c"]) <= TOL


@pytest.mark.parametrize("num_layers,bidirectional", [(2, False), (2, True)])
def test_engine_torch_export(num_layers, bidirectional):
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    m = torch.nn.LSTM(I, H, num_layers=num_layers, bidirectional=bidirectional).eval()
    x = torch.randn(9, 2, I)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), buf, dynamo=False, opset_version=17)
    spec = from_onnx(buf.getvalue())
    out = list(ort_run(buf.getvalue(), x.numpy()).values())
    y, hT, cT = _engine_run(spec, x.numpy())
    L, D = spec.num_layers, spec.num_directions
    assert rel_error(y, out[0]) <= TOL
    assert rel_error(hT.reshape(L * D, 2, H), out[1]) <= TOL
    assert rel_error(cT.reshape(L * D, 2, H), out[2]) <= TOL


def test_engine_silero_vad():
    silero = pytest.importorskip("silero_vad")
    path = os.path.join(os.path.dirname(silero.__file__), "data", "silero_vad_16k_sequence.onnx")
    if not os.path.exists(path):
        pytest.skip("silero_vad_16k_sequence.onnx not shipped by this silero-vad version")
    import onnx

    spec = from_onnx(path)
    oracle = extract_lstm(onnx.load(path), spec.source["node"][0])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 1, 128)).astype(np.float32)
    h0 = (0.5 * rng.standard_normal((1, 1, 128))).astype(np.float32)
    c0 = (0.5 * rng.standard_normal((1, 1, 128))).astype(np.float32)
    out = ort_run(oracle, x, h0, c0)
    y, hT, cT = _engine_run(spec, x, h0[None], c0[None])
    assert rel_error(y, onnx_y_to_time_major(out["Y"])) <= TOL
    assert rel_error(cT[0], out["Y_c"]) <= TOL


def test_engine_to_onnx_model():
    """The benchmark setup: ORT on to_onnx(spec) vs the Engine on spec, with state and lengths."""
    spec = random_spec(I, H, num_layers=3, num_directions=2, peephole=True, seed=4)
    model = to_onnx(spec, with_state=True, with_sequence_lens=True)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((10, 2, I)).astype(np.float32)
    h0 = rng.standard_normal((3, 2, 2, H)).astype(np.float32)
    c0 = rng.standard_normal((3, 2, 2, H)).astype(np.float32)
    lens = np.array([10, 4], np.int32)
    out = ort_run(model, x, h0.reshape(6, 2, H), c0.reshape(6, 2, H), lens)
    y, hT, cT = _engine_run(spec, x, h0, c0, lens)
    assert rel_error(y, out["Y"]) <= TOL
    assert rel_error(hT.reshape(6, 2, H), out["Y_h"]) <= TOL
    assert rel_error(cT.reshape(6, 2, H), out["Y_c"]) <= TOL
