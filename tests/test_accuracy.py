"""End-to-end float32 accuracy on long sequences (issue 16): fastlstm, PyTorch fp32 and ONNX Runtime fp32,
each against a float64 run of the same weights (the nn.LSTM in float64), on random 2-layer bidirectional
nn.LSTMs with PyTorch's default init, T = 400 steps, one-hot (40 symbols) and N(0, 1) (I = H) inputs.

Target: fastlstm's max abs distance to float64 is at most 1.5x PyTorch fp32's on every case.

The activations alone do not get every case there. The rest is the order of the gate sums: each gate is
one float32 FMA chain that starts from the bias (input projection) or from the projected value
(recurrence), so every one of its K roundings is taken at the size of that start value instead of at the
size of the small running sum of w*x terms. Chains that start from 0, with the start value added once
at the end of each KC-piece, bring every case here to 0.5-1.1x PyTorch's: `python tools/sum_order.py`
(an emulation of run() that equals Engine.run bit for bit with today's order). Until the kernels sum
that way the cases marked CHAIN_LIMITED fail, as expected (strict: each turns into a failure as soon as
it passes, so the marks get removed).
"""

from __future__ import annotations

import copy

import numpy as np
import onnxruntime as ort
import pytest
import torch

import converters
import fastlstm
from converters.onnx_export import to_onnx

T = 400
LAYERS = 2
SYMBOLS = 40
RATIO = 1.5  # fastlstm's distance to float64 / PyTorch fp32's

CHAIN_LIMITED = pytest.mark.xfail(
    strict=True,
    reason="gate sums: FMA chains start from the bias / the projected value (see the module docstring)",
)
CASES = [
    pytest.param(25, "onehot", id="H25-onehot"),
    pytest.param(25, "normal", id="H25-normal"),
    pytest.param(100, "onehot", id="H100-onehot", marks=CHAIN_LIMITED),
    pytest.param(100, "normal", id="H100-normal", marks=CHAIN_LIMITED),
    pytest.param(512, "onehot", id="H512-onehot", marks=CHAIN_LIMITED),
    pytest.param(512, "normal", id="H512-normal", marks=CHAIN_LIMITED),
]


def _model_and_input(H: int, kind: str, seed: int = 0):
    """A default-init 2-layer bidirectional nn.LSTM and its input x (T, I) float32."""
    rng = np.random.default_rng(seed)
    if kind == "onehot":
        x = np.zeros((T, SYMBOLS), np.float32)
        x[np.arange(T), rng.integers(0, SYMBOLS, T)] = 1.0
    else:
        x = rng.standard_normal((T, H)).astype(np.float32)
    torch.manual_seed(seed)
    lstm = torch.nn.LSTM(x.shape[1], H, LAYERS, bidirectional=True).eval()
    return lstm, x


def _distances(H: int, kind: str) -> dict[str, float]:
    """Max abs distance of each float32 runtime's output y (T, 2H) to the float64 run."""
    lstm, x = _model_and_input(H, kind)
    with torch.no_grad():
        y64 = copy.deepcopy(lstm).double()(torch.from_numpy(x).double())[0].numpy()
        y_torch = lstm(torch.from_numpy(x))[0].numpy()
    spec = converters.from_torch(lstm)
    y_ours = fastlstm.Engine(spec).run(x)[0]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(to_onnx(spec).SerializeToString(), opts, providers=["CPUExecutionProvider"])
    y_ort = session.run(None, {"X": x[:, None, :]})[0][:, 0, :]
    return {name: float(np.abs(y.astype(np.float64) - y64).max())
            for name, y in (("fastlstm", y_ours), ("torch", y_torch), ("ort", y_ort))}


@pytest.mark.parametrize("H, kind", CASES)
def test_as_accurate_as_pytorch_on_long_sequences(H, kind):
    d = _distances(H, kind)
    table = f"H={H} {kind}: fastlstm {d['fastlstm']:.2e}, torch {d['torch']:.2e}, ORT {d['ort']:.2e}"
    print(table)
    assert d["fastlstm"] <= RATIO * d["torch"], table
