"""PyTorch test models and a tiny float64 oracle for the torch converter tests.

`spec_forward64` is deliberately written apart from tests/reference.py: a second, independent reading
of PyTorch's LSTM equations, so the converter can be checked even before (or against) the shared
reference. It covers what nn.LSTM can express: default cell, projection, bidirectional, initial state.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# Relative tolerance against PyTorch float32 outputs: max|ours - torch| / max(max|torch|, 1).
TOL = 2e-5


@dataclass(frozen=True)
class Config:
    """One nn.LSTM shape. T steps, B batch; init: pass a random (h0, c0)."""

    input_size: int
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    proj_size: int = 0
    bias: bool = True
    T: int = 7
    B: int = 1
    init: bool = False

    @property
    def D(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def Hout(self) -> int:
        return self.proj_size or self.hidden_size

    def __str__(self) -> str:  # readable pytest ids
        parts = [f"I{self.input_size}", f"H{self.hidden_size}", f"L{self.num_layers}", f"B{self.B}"]
        parts += ["bi"] * self.bidirectional + [f"P{self.proj_size}"] * bool(self.proj_size)
        parts += ["nobias"] * (not self.bias) + ["init"] * self.init
        return "-".join(parts)


CONFIGS = [
    Config(3, 8),
    Config(5, 6, num_layers=2, bidirectional=True, B=3),
    Config(4, 7, num_layers=3, bidirectional=True, proj_size=3, B=2, init=True),
    Config(6, 5, num_layers=2, bias=False, B=2),
    Config(8, 8, num_layers=3, init=True, T=5),
    Config(2, 9, proj_size=4, init=True, B=4),
    Config(10, 4, num_layers=2, bidirectional=True, bias=False, proj_size=2, T=4, B=1, init=True),
]


def make_lstm(cfg: Config, seed: int = 0) -> torch.nn.LSTM:
    """A float32 nn.LSTM with seeded weights, biases scaled up so they matter."""
    torch.manual_seed(seed)
    lstm = torch.nn.LSTM(cfg.input_size, cfg.hidden_size, cfg.num_layers, bias=cfg.bias,
                         bidirectional=cfg.bidirectional, proj_size=cfg.proj_size)
    with torch.no_grad():
        for name, p in lstm.named_parameters():
            p.copy_(torch.randn_like(p) * (0.6 if name.startswith("weight") else 0.4))
    return lstm.eval()


def make_inputs(cfg: Config, seed: int = 1):
    """x (T, B, I) float32 and (h0 (L*D, B, Hout), c0 (L*D, B, H)) in torch's layout, or None."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((cfg.T, cfg.B, cfg.input_size)).astype(np.float32)
    if not cfg.init:
        return x, None
    LD = cfg.num_layers * cfg.D
    h0 = (0.5 * rng.standard_normal((LD, cfg.B, cfg.Hout))).astype(np.float32)
    c0 = (0.5 * rng.standard_normal((LD, cfg.B, cfg.hidden_size))).astype(np.float32)
    return x, (h0, c0)


def run_torch(lstm: torch.nn.LSTM, x: np.ndarray, state=None, dtype=torch.float32):
    """(y (T, B, D*Hout), h_n (L*D, B, Hout), c_n (L*D, B, H)) as float64 numpy."""
    module = copy.deepcopy(lstm).to(dtype)
    module.batch_first = False  # x is always time-major here
    with torch.no_grad():
        args = (torch.from_numpy(x).to(dtype),)
        if state is not None:
            args += (tuple(torch.from_numpy(s).to(dtype) for s in state),)
        y, (h, c) = module(*args)
    return y.double().numpy(), h.double().numpy(), c.double().numpy()


def torch_state_to_ld(state, L: int, D: int):
    """torch's (L*D, B, n) -> (L, D, B, n): index l*D + d is layer l direction d."""
    return tuple(s.reshape(L, D, *s.shape[1:]) for s in state)


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def spec_forward64(spec, x, h0=None, c0=None):
    """Float64 forward of a default-cell spec. x (T, B, I); h0 (L, D, B, Hout), c0 (L, D, B, H).

    Returns y (T, B, D*Hout), hT (L, D, B, Hout), cT (L, D, B, H)."""
    T, B, _ = x.shape
    L, D, H, Hout = spec.num_layers, spec.num_directions, spec.hidden_size, spec.output_size
    hT = np.zeros((L, D, B, Hout))
    cT = np.zeros((L, D, B, H))
    layer_in = np.asarray(x, dtype=np.float64)
    for l in range(L):
        out = np.zeros((T, B, D * Hout))
        for d in range(D):
            ds = spec.layers[l][d]
            W, R, b = (np.asarray(a, dtype=np.float64) for a in (ds.W, ds.R, ds.b))
            P = None if ds.proj is None else np.asarray(ds.proj, dtype=np.float64)
            h = np.zeros((B, Hout)) if h0 is None else np.array(h0[l, d], dtype=np.float64)
            c = np.zeros((B, H)) if c0 is None else np.array(c0[l, d], dtype=np.float64)
            for t in (range(T - 1, -1, -1) if ds.reverse else range(T)):
                z = layer_in[t] @ W.T + h @ R.T + b
                i, f, g, o = _sigmoid(z[:, :H]), _sigmoid(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), \
                    _sigmoid(z[:, 3 * H:])
                c = f * c + i * g
                h = o * np.tanh(c)
                if P is not None:
                    h = h @ P.T
                out[t, :, d * Hout:(d + 1) * Hout] = h
            hT[l, d], cT[l, d] = h, c
        layer_in = out
    return layer_in, hT, cT


def rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.max(np.abs(ours - ref)) / max(float(np.max(np.abs(ref))), 1.0))


class TwoLSTMs(torch.nn.Module):
    """A bigger model: an encoder LSTM, a linear layer and a decoder LSTM with a projection."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.encoder = torch.nn.Module()
        self.encoder.lstm = torch.nn.LSTM(4, 6, num_layers=2, bidirectional=True)
        self.mid = torch.nn.Linear(12, 5)
        self.decoder = torch.nn.LSTM(5, 7, proj_size=3, batch_first=True)


def _create_marker(path: str) -> None:
    Path(path).write_text("the pickle payload ran")


class Booby:
    """Unpickling this object creates a marker file: proof of whether a loader executed pickle code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (_create_marker, (self.marker,))
