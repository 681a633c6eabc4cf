"""Layers around the LSTM stack: what a whole model is besides its LSTM (spec side, no kernels).

A ModelSpec holds `pre` (layers before the LSTM, in order) and `post` (layers after it). Every layer is
a small dataclass of canonical float32 arrays; converters fill them, format.py stores them, and
stages.py packs them for the kernels (kernels/layers.py).

    Embedding    table (V, E)                    token ids (any integer in [0, V)) -> rows of the table
    Linear       weight (out, in), bias (out,)   y = act(weight @ x + bias); bias None = no bias
    Activation   kind                            y = act(x), on the last axis
    LayerNorm    weight (n,), bias (n,), eps     y = (x - mean) / sqrt(var + eps) * weight + bias
    SelectLast   state                           the rows of the last valid time step (see below)

Activations: "none", "relu", "tanh", "sigmoid", "softmax", "log_softmax" (the last two over the
feature axis, float32, numerically stable). Dropout and Identity have no layer: they vanish at
conversion (inference).

SelectLast turns per-step rows (T, B, F) into (B, F): with state=False, each sequence's output at its
last valid step (y[-1], or y[len-1] with sequence_lens), which is what `out[-1]` / `out[:, -1]` heads
take; with state=True, the final hidden state of each direction of the last layer (h_n: the reverse
direction's is at step 0), what `torch.cat((h_n[-2], h_n[-1]), 1)` takes. For a model without reverse
directions the two are the same rows. SelectLast may only be the first layer of `post`: the layers
after it work row by row, so any model that selects later selects first (converters move it).

Rules checked by validate_layers: an Embedding may only be pre[0]; the widths chain (each layer's input
is the previous layer's output, pre[-1] feeds the LSTM's input_size, post[0] reads the LSTM's D*Hout).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import SpecError

ACTIVATION_KINDS = ("none", "relu", "tanh", "sigmoid", "softmax", "log_softmax")
MAX_VOCAB = 1 << 24  # token ids are checked against V; a table this long is not one we wrote
DEFAULT_LAYER_NORM_EPS = 1e-5


@dataclass
class Embedding:
    """Token ids -> rows of table (V, E)."""

    table: np.ndarray

    @property
    def in_features(self) -> None:
        return None  # takes token ids, not features

    @property
    def out_features(self) -> int:
        return int(self.table.shape[1])

    @property
    def vocab_size(self) -> int:
        return int(self.table.shape[0])

    def describe(self) -> str:
        return f"Embedding(vocab {self.vocab_size}, dim {self.out_features})"


@dataclass
class Linear:
    """y = act(weight @ x + bias): weight (out, in), bias (out,) or None."""

    weight: np.ndarray
    bias: np.ndarray | None = None
    activation: str = "none"

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    def describe(self) -> str:
        act = "" if self.activation == "none" else f" + {self.activation}"
        bias = "" if self.bias is not None else ", no bias"
        return f"Linear({self.in_features} -> {self.out_features}{bias}){act}"


@dataclass
class Activation:
    """y = act(x) over the last axis; `features` is the width it works on."""

    kind: str
    features: int

    @property
    def in_features(self) -> int:
        return int(self.features)

    @property
    def out_features(self) -> int:
        return int(self.features)

    def describe(self) -> str:
        return f"Activation({self.kind}, {self.features})"


@dataclass
class LayerNorm:
    """Normalisation over the last axis of width n: weight (n,), bias (n,), eps > 0."""

    weight: np.ndarray
    bias: np.ndarray
    eps: float = DEFAULT_LAYER_NORM_EPS

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[0])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    def describe(self) -> str:
        return f"LayerNorm({self.in_features}, eps {self.eps:g})"


@dataclass
class SelectLast:
    """Per-step rows -> the last valid step (state=False) or the final state of each direction (state=True).
    `features` is D*Hout, the LSTM's output width."""

    features: int
    state: bool = False

    @property
    def in_features(self) -> int:
        return int(self.features)

    @property
    def out_features(self) -> int:
        return int(self.features)

    def describe(self) -> str:
        return "SelectLast(final state h_n)" if self.state else "SelectLast(last valid step)"


LAYER_TYPES = (Embedding, Linear, Activation, LayerNorm, SelectLast)


def validate_layers(pre: list, post: list, lstm_input: int, lstm_output: int) -> None:
    """Check kinds, order and every shape; cast arrays to C-contiguous float32 in place."""
    for where, layers in (("pre", pre), ("post", post)):
        if not isinstance(layers, list):
            raise SpecError(f"{where} layers must be a list, got {type(layers).__name__}")
        for k, layer in enumerate(layers):
            if not isinstance(layer, LAYER_TYPES):
                raise SpecError(f"{where}[{k}]: expected one of {', '.join(t.__name__ for t in LAYER_TYPES)}, "
                                f"got {type(layer).__name__}")
            if isinstance(layer, Embedding) and (where == "post" or k != 0):
                raise SpecError(f"{where}[{k}]: an Embedding can only be the first layer before the LSTM")
            if isinstance(layer, SelectLast) and (where == "pre" or k != 0):
                raise SpecError(f"{where}[{k}]: SelectLast can only be the first layer after the LSTM (the "
                                f"layers after it work row by row, so select first)")
            _check_layer(layer, f"{where}[{k}]")
    width = None  # features flowing into the next layer; None = token ids
    if pre and not isinstance(pre[0], Embedding):
        width = pre[0].in_features
    for k, layer in enumerate(pre):
        if k and layer.in_features != width:
            raise SpecError(f"pre[{k}]: takes {layer.in_features} features, the layer before gives {width}")
        width = layer.out_features
    if pre and width != lstm_input:
        raise SpecError(f"the last layer before the LSTM gives {width} features, the LSTM takes {lstm_input}")
    width = lstm_output
    for k, layer in enumerate(post):
        if layer.in_features != width:
            what = "the LSTM gives" if k == 0 else "the layer before gives"
            raise SpecError(f"post[{k}]: takes {layer.in_features} features, {what} {width}")
        width = layer.out_features


def _check_layer(layer, where: str) -> None:
    if isinstance(layer, Embedding):
        layer.table = _matrix(layer.table, f"{where} Embedding table")
        if layer.table.shape[0] > MAX_VOCAB:
            raise SpecError(f"{where}: vocabulary of {layer.table.shape[0]} exceeds {MAX_VOCAB}")
    elif isinstance(layer, Linear):
        layer.weight = _matrix(layer.weight, f"{where} Linear weight")
        if layer.bias is not None:
            layer.bias = _vector(layer.bias, layer.weight.shape[0], f"{where} Linear bias")
        layer.activation = _activation(layer.activation, where)
    elif isinstance(layer, Activation):
        layer.kind = _activation(layer.kind, where)
        layer.features = _positive(layer.features, f"{where} Activation features")
    elif isinstance(layer, LayerNorm):
        layer.weight = _floats(layer.weight, f"{where} LayerNorm weight")
        if layer.weight.ndim != 1 or layer.weight.shape[0] < 1:
            raise SpecError(f"{where} LayerNorm weight: expected shape (n,), found {layer.weight.shape}")
        layer.bias = _vector(layer.bias, layer.weight.shape[0], f"{where} LayerNorm bias")
        eps = layer.eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating)) or not (
                math.isfinite(eps) and eps > 0):
            raise SpecError(f"{where}: LayerNorm eps must be a positive number, got {eps!r}")
        layer.eps = float(eps)
    elif isinstance(layer, SelectLast):
        layer.features = _positive(layer.features, f"{where} SelectLast features")
        if not isinstance(layer.state, (bool, np.bool_)):
            raise SpecError(f"{where}: SelectLast state must be True or False, got {layer.state!r}")
        layer.state = bool(layer.state)


def _activation(kind, where: str) -> str:
    if kind not in ACTIVATION_KINDS:
        raise SpecError(f"{where}: unknown activation {kind!r}; expected one of {', '.join(ACTIVATION_KINDS)}")
    return kind


def _positive(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise SpecError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _floats(array, what: str) -> np.ndarray:
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        raise SpecError(f"{what}: expected floating point values, found {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.float32)


def _matrix(array, what: str) -> np.ndarray:
    array = _floats(array, what)
    if array.ndim != 2 or min(array.shape) < 1:
        raise SpecError(f"{what}: expected a non-empty 2-D array, found shape {array.shape}")
    return array


def _vector(array, n: int, what: str) -> np.ndarray:
    array = _floats(array, what)
    if array.shape != (n,):
        raise SpecError(f"{what}: expected shape ({n},), found {array.shape}")
    return array


# ---- the packed file's view of a layer: metadata entry + named tensors (format.py) ---------------------


def layer_meta(layer) -> dict:
    """The JSON entry format.py stores for a layer (its tensors' shapes follow from it: layer_tensors)."""
    if isinstance(layer, Embedding):
        return {"kind": "embedding", "vocab": layer.vocab_size, "dim": layer.out_features}
    if isinstance(layer, Linear):
        return {"kind": "linear", "in": layer.in_features, "out": layer.out_features,
                "bias": layer.bias is not None, "activation": layer.activation}
    if isinstance(layer, Activation):
        return {"kind": "activation", "activation": layer.kind, "features": layer.features}
    if isinstance(layer, LayerNorm):
        return {"kind": "layer_norm", "features": layer.in_features, "eps": layer.eps}
    return {"kind": "select_last", "features": layer.features, "state": layer.state}


def layer_arrays(layer) -> dict[str, np.ndarray]:
    """Tensor suffix -> array, in file order."""
    if isinstance(layer, Embedding):
        return {"table": layer.table}
    if isinstance(layer, Linear):
        return {"weight": layer.weight} | ({"bias": layer.bias} if layer.bias is not None else {})
    if isinstance(layer, LayerNorm):
        return {"weight": layer.weight, "bias": layer.bias}
    return {}


def layer_tensors(meta: dict, max_dim: int) -> dict[str, tuple[int, ...]]:
    """Tensor suffix -> shape implied by a metadata entry; SpecError if the entry is malformed.
    Every size is checked against its limit before anything is allocated."""
    if not isinstance(meta, dict):
        raise SpecError(f"malformed layer entry {meta!r:.80}")
    kind = meta.get("kind")

    def size(key, limit=max_dim):
        value = meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            raise SpecError(f"layer {kind!r}: {key}={value!r:.40} is not an integer in [1, {limit}]")
        return value

    if kind == "embedding":
        return {"table": (size("vocab", MAX_VOCAB), size("dim"))}
    if kind == "linear":
        if not isinstance(meta.get("bias"), bool):
            raise SpecError(f"layer 'linear': bias={meta.get('bias')!r:.40} must be true or false")
        _activation(meta.get("activation"), "layer 'linear'")
        out, n_in = size("out", MAX_VOCAB), size("in")
        return {"weight": (out, n_in)} | ({"bias": (out,)} if meta["bias"] else {})
    if kind == "activation":
        _activation(meta.get("activation"), "layer 'activation'")
        size("features", MAX_VOCAB)
        return {}
    if kind == "layer_norm":
        n = size("features", MAX_VOCAB)
        eps = meta.get("eps")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and eps > 0):
            raise SpecError(f"layer 'layer_norm': eps={eps!r:.40} must be a positive number")
        return {"weight": (n,), "bias": (n,)}
    if kind == "select_last":
        size("features")
        if not isinstance(meta.get("state"), bool):
            raise SpecError(f"layer 'select_last': state={meta.get('state')!r:.40} must be true or false")
        return {}
    raise SpecError(f"unknown layer kind {kind!r:.40}")


def layer_from(meta: dict, arrays: dict[str, np.ndarray]):
    """Inverse of layer_meta / layer_arrays (meta already checked by layer_tensors)."""
    kind = meta["kind"]
    if kind == "embedding":
        return Embedding(arrays["table"])
    if kind == "linear":
        return Linear(arrays["weight"], arrays.get("bias"), meta["activation"])
    if kind == "activation":
        return Activation(meta["activation"], meta["features"])
    if kind == "layer_norm":
        return LayerNorm(arrays["weight"], arrays["bias"], float(meta["eps"]))
    return SelectLast(meta["features"], meta["state"])
