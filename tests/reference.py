"""Independent float64 NumPy reference of the canonical fastlstm cell (see fastlstm/spec.py).

Plain per-timestep, per-sequence loops: slow on purpose, written to be read. Semantics follow ONNX
Runtime where ONNX leaves room (checked in tests/test_onnx_import.py):
  - clip clamps the input of the gate activations f (for i, f, o, peephole terms included) and g;
    it does NOT clamp the input of h(c), and the cell state itself is stored unclipped.
  - input_forget couples the gates as f = 1 - i (i computed as usual, peephole included).
  - sequence_lens: outputs past a sequence's length are 0; the final state is the state after its
    last valid step; a reverse direction starts at step len-1; a length-0 sequence returns a zero
    final state (not its initial state) and all-zero outputs.
"""

from __future__ import annotations

import numpy as np


def activation(name: str, x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """The ONNX RNN activation set (canonical names, see fastlstm.spec.ACTIVATIONS)."""
    if name == "Sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if name == "Tanh":
        return np.tanh(x)
    if name == "Relu":
        return np.maximum(x, 0.0)
    if name == "Affine":
        return alpha * x + beta
    if name == "LeakyRelu":
        return np.where(x >= 0, x, alpha * x)
    if name == "ThresholdedRelu":
        return np.where(x > alpha, x, 0.0)
    if name == "ScaledTanh":
        return alpha * np.tanh(beta * x)
    if name == "HardSigmoid":
        return np.clip(alpha * x + beta, 0.0, 1.0)
    if name == "Elu":
        return np.where(x >= 0, x, alpha * (np.exp(np.minimum(x, 0.0)) - 1.0))
    if name == "Softsign":
        return x / (1.0 + np.abs(x))
    if name == "Softplus":
        return np.logaddexp(0.0, x)
    raise ValueError(f"unknown activation {name!r}")


def cell_step(ds, x, h, c):
    """One step of one direction for one sequence. x (I,), h (Hout,), c (H,) -> (h', c')."""
    opts = ds.options
    H = c.shape[0]
    W, R, b = (np.asarray(a, np.float64) for a in (ds.W, ds.R, ds.b))
    p = np.zeros((3, H)) if ds.peephole is None else np.asarray(ds.peephole, np.float64)

    def act(k, v, clip=opts.clip):
        if clip is not None:
            v = np.clip(v, -clip, clip)
        return activation(opts.activations[k], v, opts.alphas[k], opts.betas[k])

    gates = W @ x + R @ h + b
    gi, gf, gg, go = gates[:H], gates[H:2 * H], gates[2 * H:3 * H], gates[3 * H:]
    i = act(0, gi + p[0] * c)
    f = 1.0 - i if opts.input_forget else act(0, gf + p[1] * c)
    g = act(1, gg)
    c_new = f * c + i * g
    o = act(0, go + p[2] * c_new)
    h_new = o * act(2, c_new, clip=None)  # ONNX Runtime leaves h's input unclipped
    if ds.proj is not None:
        h_new = np.asarray(ds.proj, np.float64) @ h_new
    return h_new, c_new


def run_direction(ds, x, h0, c0, lens):
    """x (T,B,I), h0 (B,Hout), c0 (B,H), lens (B,) -> y (T,B,Hout), hT (B,Hout), cT (B,H)."""
    T, B = x.shape[:2]
    y = np.zeros((T, B, h0.shape[1]))
    hT, cT = np.zeros_like(h0), np.zeros_like(c0)
    for b in range(B):
        n = int(lens[b])
        if n == 0:
            continue  # ONNX Runtime: zero outputs and a zero final state
        steps = range(n - 1, -1, -1) if ds.reverse else range(n)
        h, c = h0[b].copy(), c0[b].copy()
        for t in steps:
            h, c = cell_step(ds, x[t, b], h, c)
            y[t, b] = h
        hT[b], cT[b] = h, c
    return y, hT, cT


def reference_run(spec, x, h0=None, c0=None, sequence_lens=None):
    """x (T,B,I); h0 (L,D,B,Hout); c0 (L,D,B,H); sequence_lens (B,) ->
    y (T,B,D*Hout), hT (L,D,B,Hout), cT (L,D,B,H), all float64."""
    x = np.asarray(x, np.float64)
    T, B, _ = x.shape
    L, D, H, Hout = spec.num_layers, spec.num_directions, spec.hidden_size, spec.output_size
    h0 = np.zeros((L, D, B, Hout)) if h0 is None else np.asarray(h0, np.float64)
    c0 = np.zeros((L, D, B, H)) if c0 is None else np.asarray(c0, np.float64)
    lens = np.full(B, T) if sequence_lens is None else np.asarray(sequence_lens)
    hT, cT = np.zeros((L, D, B, Hout)), np.zeros((L, D, B, H))
    layer_in = x
    for l in range(L):
        outs = []
        for d in range(D):
            y_d, hT[l, d], cT[l, d] = run_direction(spec.layers[l][d], layer_in, h0[l, d], c0[l, d], lens)
            outs.append(y_d)
        layer_in = np.concatenate(outs, axis=-1)
    return layer_in, hT, cT


def reference_layers(layers, rows: np.ndarray) -> np.ndarray:
    """The row-wise layers of fastlstm.layers (Embedding excluded) on rows (..., F), float64."""
    z = np.asarray(rows, np.float64)
    for layer in layers:
        kind = type(layer).__name__
        if kind == "Linear":
            z = z @ layer.weight.astype(np.float64).T
            if layer.bias is not None:
                z = z + layer.bias
            z = _reference_activation(layer.activation, z)
        elif kind == "Activation":
            z = _reference_activation(layer.kind, z)
        elif kind == "LayerNorm":
            mean = z.mean(-1, keepdims=True)
            var = ((z - mean) ** 2).mean(-1, keepdims=True)
            z = (z - mean) / np.sqrt(var + layer.eps) * layer.weight + layer.bias
        else:
            raise ValueError(f"reference_layers: {kind} is not row-wise")
    return z


def _reference_activation(kind: str, z: np.ndarray) -> np.ndarray:
    if kind == "relu":
        return np.maximum(z, 0.0)
    if kind == "tanh":
        return np.tanh(z)
    if kind == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if kind in ("softmax", "log_softmax"):
        shifted = z - z.max(-1, keepdims=True)
        log_sum = np.log(np.exp(shifted).sum(-1, keepdims=True))
        return np.exp(shifted - log_sum) if kind == "softmax" else shifted - log_sum
    return z


def reference_model(spec, x, sequence_lens=None, h0=None, c0=None):
    """A whole model (spec.pre / spec.post) on x (T, B) token ids or (T, B, F) features, time-major, float64:
    per-step rows (T, B, C), or (B, C) when it selects the last step."""
    pre = list(spec.pre)
    if pre and type(pre[0]).__name__ == "Embedding":
        x = pre.pop(0).table.astype(np.float64)[np.asarray(x)]
    y, hT, _ = reference_run(spec, reference_layers(pre, x), h0, c0, sequence_lens)
    post = list(spec.post)
    if post and type(post[0]).__name__ == "SelectLast":
        T, B, _ = y.shape
        lens = np.full(B, T) if sequence_lens is None else np.asarray(sequence_lens)
        if post.pop(0).state:
            y = hT[-1].transpose(1, 0, 2).reshape(B, -1)
        else:
            y = np.stack([y[n - 1, b] if n else np.zeros(y.shape[2]) for b, n in enumerate(lens)])
    return reference_layers(post, y)
