"""What a model *is*: layers x directions of canonical float32 arrays plus cell options.

Canonical cell (one order everywhere inside fastlstm): gates i, f, g, o (PyTorch's order).
For one direction of one layer, with H hidden units, Hout = proj_size or H, and I inputs:

    gates = W @ x + R @ h + b                     # W (4H, I), R (4H, Hout), b (4H,) = pre-summed biases
    i = f(gates_i + p_i * c)    f_ = f(gates_f + p_f * c)    g = g(gates_g)
    c' = f_ * c + i * g          (input_forget: f_ = 1 - i)
    o = f(gates_o + p_o * c')
    h' = o * h(c')               (projection: h' = P_hr @ (o * h(c')), P_hr (Hout, H))

f, g, h are the three activations (ONNX's names); clip, when set, clamps the inputs of f and g
to [-clip, clip] (peephole terms included), not the input of h: ONNX Runtime's semantics.
Converters reorder and sum once; kernels never see a source format.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import SpecError
from .layers import Embedding, SelectLast, validate_layers
from .quantized import WEIGHT_TYPES, QuantizedMatrix, weight_type  # noqa: F401 (re-exported)

# ONNX activation name -> (default alpha, default beta); None = the function takes no such parameter.
# Defaults are what ONNX Runtime (the oracle for ONNX semantics) uses when activation_alpha/beta run
# out, measured with onnxruntime 1.31: Affine, ThresholdedRelu and ScaledTanh default to 0, unlike
# the standalone ONNX operators of those names.
ACTIVATIONS: dict[str, tuple[float | None, float | None]] = {
    "Sigmoid": (None, None),
    "Tanh": (None, None),
    "Relu": (None, None),
    "Affine": (0.0, 0.0),
    "LeakyRelu": (0.01, None),
    "ThresholdedRelu": (0.0, None),
    "ScaledTanh": (0.0, 0.0),
    "HardSigmoid": (0.2, 0.5),
    "Elu": (1.0, None),
    "Softsign": (None, None),
    "Softplus": (None, None),
}
_CANONICAL_NAME = {name.lower(): name for name in ACTIVATIONS}
DEFAULT_ACTIVATIONS = ("Sigmoid", "Tanh", "Tanh")


def canonical_activation(name: str) -> str:
    """ONNX activation names are case-insensitive in practice; return the canonical spelling."""
    try:
        return _CANONICAL_NAME[str(name).lower()]
    except KeyError:
        raise SpecError(
            f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}"
        ) from None


@dataclass(frozen=True)
class CellOptions:
    """Per-direction cell options. alpha/beta are resolved (defaults filled in), 0.0 where unused."""

    activations: tuple[str, str, str] = DEFAULT_ACTIVATIONS
    alphas: tuple[float, float, float] = (0.0, 0.0, 0.0)
    betas: tuple[float, float, float] = (0.0, 0.0, 0.0)
    clip: float | None = None
    input_forget: bool = False

    @staticmethod
    def make(activations=None, alphas=None, betas=None, clip=None, input_forget=False) -> CellOptions:
        """Build options with ONNX defaults: alphas/betas given only for activations that use them.

        `alphas` / `betas` follow ONNX's packing: a flat list consumed in order by the activations
        that take a parameter (extra entries are an error; missing ones take the default)."""
        names = tuple(canonical_activation(a) for a in (activations or DEFAULT_ACTIVATIONS))
        if len(names) != 3:
            raise SpecError(f"a direction needs 3 activations (f, g, h), got {len(names)}")
        resolved = []
        for given, slot in ((alphas, 0), (betas, 1)):
            queue = list(given) if given is not None else []
            values = []
            for name in names:
                default = ACTIVATIONS[name][slot]
                if default is None:
                    values.append(0.0)
                else:
                    values.append(float(queue.pop(0)) if queue else default)
            if queue:
                kind = "alpha" if slot == 0 else "beta"
                raise SpecError(f"too many activation_{kind} values for activations {names}")
            resolved.append(tuple(values))
        if clip is not None:
            clip = float(clip)
            if not clip > 0 or math.isnan(clip):
                raise SpecError(f"clip must be a positive number, got {clip}")
        return CellOptions(names, resolved[0], resolved[1], clip, bool(input_forget))

    @property
    def is_default(self) -> bool:
        """The fused fast path covers exactly this: sigmoid/tanh/tanh, no clip, no input_forget."""
        return self.activations == DEFAULT_ACTIVATIONS and self.clip is None and not self.input_forget

    def to_json(self) -> dict:
        return {
            "activations": list(self.activations),
            "alphas": list(self.alphas),
            "betas": list(self.betas),
            "clip": self.clip,
            "input_forget": self.input_forget,
        }

    @staticmethod
    def from_json(obj: dict) -> CellOptions:
        try:
            names = tuple(canonical_activation(a) for a in obj["activations"])
            alphas = tuple(float(v) for v in obj["alphas"])
            betas = tuple(float(v) for v in obj["betas"])
            clip = None if obj.get("clip") is None else float(obj["clip"])
            input_forget = bool(obj.get("input_forget", False))
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecError(f"malformed cell options {obj!r}: {exc}") from None
        if len(names) != 3 or len(alphas) != 3 or len(betas) != 3:
            raise SpecError(f"cell options need 3 activations/alphas/betas, got {obj!r}")
        if clip is not None and not clip > 0:
            raise SpecError(f"clip must be a positive number, got {clip}")
        return CellOptions(names, alphas, betas, clip, input_forget)


@dataclass
class DirectionSpec:
    """One direction of one layer, canonical float32 arrays (C-contiguous).

    W: (4H, I)   R: (4H, Hout)   b: (4H,)   peephole: (3, H) rows p_i, p_f, p_o, or None
    (W and R may each be a QuantizedMatrix instead, see ModelSpec.weights; b, peephole, proj stay float32)
    proj: (Hout, H) or None (PyTorch's weight_hr)
    reverse: runs from the last valid step to the first. Direction 1 of a bidirectional layer is
    always reverse; a one-direction layer may be reverse too (ONNX direction="reverse").
    """

    W: np.ndarray | QuantizedMatrix
    R: np.ndarray | QuantizedMatrix
    b: np.ndarray
    peephole: np.ndarray | None = None
    proj: np.ndarray | None = None
    options: CellOptions = field(default_factory=CellOptions)
    reverse: bool = False


@dataclass
class ModelSpec:
    """A stack of LSTM layers. layers[l][d] is layer l, direction d (0 forward, 1 reverse).

    `pre` / `post` are the layers before and after the stack (fastlstm.layers: Embedding, Linear, ...);
    both empty for a bare LSTM, which behaves exactly as before they existed."""

    input_size: int
    hidden_size: int
    num_layers: int
    num_directions: int
    proj_size: int  # 0 = no projection
    layers: list[list[DirectionSpec]]
    source: dict = field(default_factory=dict)  # json-able provenance (format, node, opset, ...)
    verify: dict = field(default_factory=dict)  # what `convert --verify` measured
    pre: list = field(default_factory=list)  # layers before the LSTM stack, in order
    post: list = field(default_factory=list)  # layers after it, in order

    @property
    def output_size(self) -> int:
        """Hout: what one direction emits per step."""
        return self.proj_size or self.hidden_size

    @property
    def weights(self) -> str:
        """The weight type of W and R: 'fp32' or a QuantizedMatrix kind ('fp16', 'bf16', 'int8').
        One type per model (validate() checks that every W and R shares it). The layers around the LSTM
        stay fp32."""
        return weight_type(self.layers[0][0].W) if self.layers and self.layers[0] else "fp32"

    @property
    def vocab_size(self) -> int | None:
        """V when the model starts with an Embedding (it takes token ids), else None."""
        return self.pre[0].vocab_size if self.pre and isinstance(self.pre[0], Embedding) else None

    @property
    def in_features(self) -> int | None:
        """Features per step the model takes (None when it takes token ids)."""
        if self.vocab_size is not None:
            return None
        return self.pre[0].in_features if self.pre else self.input_size

    @property
    def out_features(self) -> int:
        """Features per row the model returns: the last layer's, or D*Hout for a bare LSTM."""
        return self.post[-1].out_features if self.post else self.num_directions * self.output_size

    @property
    def selects_last(self) -> bool:
        """True when run() returns one row per sequence (B, C) instead of one per step."""
        return bool(self.post) and isinstance(self.post[0], SelectLast)

    def layer_input_size(self, layer: int) -> int:
        return self.input_size if layer == 0 else self.num_directions * self.output_size

    def validate(self) -> ModelSpec:
        """Check every shape against the sizes; cast arrays to C-contiguous float32. Returns self."""
        for name in ("input_size", "hidden_size", "num_layers", "num_directions", "proj_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise SpecError(f"{name} must be an integer, got {value!r}")
        if self.input_size < 1 or self.hidden_size < 1 or self.num_layers < 1:
            raise SpecError(
                f"sizes must be positive: input_size={self.input_size}, "
                f"hidden_size={self.hidden_size}, num_layers={self.num_layers}"
            )
        if self.num_directions not in (1, 2):
            raise SpecError(f"num_directions must be 1 or 2, got {self.num_directions}")
        if not 0 <= self.proj_size < self.hidden_size:
            raise SpecError(f"proj_size must be in [0, hidden_size={self.hidden_size}) (0: no projection; "
                            f"PyTorch's rule), got {self.proj_size}")
        if len(self.layers) != self.num_layers:
            raise SpecError(f"expected {self.num_layers} layers, found {len(self.layers)}")
        H, Hout = self.hidden_size, self.output_size
        weights = self.weights
        for l, layer in enumerate(self.layers):
            if len(layer) != self.num_directions:
                raise SpecError(f"layer {l}: expected {self.num_directions} directions, found {len(layer)}")
            I = self.layer_input_size(l)
            for d, ds in enumerate(layer):
                where = f"layer {l} direction {d}"
                ds.W = _checked_weights(ds.W, (4 * H, I), f"{where} W", weights)
                ds.R = _checked_weights(ds.R, (4 * H, Hout), f"{where} R", weights)
                ds.b = _checked(ds.b, (4 * H,), f"{where} b")
                if ds.peephole is not None:
                    ds.peephole = _checked(ds.peephole, (3, H), f"{where} peephole")
                if self.proj_size:
                    if ds.proj is None:
                        raise SpecError(f"{where}: proj_size={self.proj_size} but no projection matrix")
                    ds.proj = _checked(ds.proj, (Hout, H), f"{where} proj")
                elif ds.proj is not None:
                    raise SpecError(f"{where}: projection matrix given but proj_size is 0")
                if self.num_directions == 2 and bool(ds.reverse) != bool(d):
                    raise SpecError(f"{where}: a bidirectional layer runs direction 0 forward and 1 reverse")
                if not isinstance(ds.options, CellOptions):
                    raise SpecError(f"{where}: options must be CellOptions, got {type(ds.options).__name__}")
        validate_layers(self.pre, self.post, self.input_size, self.num_directions * Hout)
        return self


def _checked_weights(matrix, shape: tuple[int, int], what: str, weights: str):
    """W or R: a float32 array (cast) or a QuantizedMatrix of the model's one weight type (checked)."""
    found = weight_type(matrix)
    if found != weights:
        raise SpecError(f"{what}: weight type {found}, but the model's weights are {weights} "
                        f"(one weight type per model: every W and R shares the type of layer 0's W)")
    if isinstance(matrix, QuantizedMatrix):
        return matrix.checked(shape, what)
    return _checked(matrix, shape, what)


def _checked(array, shape: tuple[int, ...], what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.shape != shape:
        raise SpecError(f"{what}: expected shape {shape}, found {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise SpecError(f"{what}: expected floating point weights, found {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.float32)
