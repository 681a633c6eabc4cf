"""Benchmark models: one fixed-seed spec per size, converted once for each engine.

Every engine runs the same weights: `BenchModel` holds the canonical fastlstm spec and converts it
lazily (and only once) to an ONNX model (converters.to_onnx) and a torch nn.LSTM (converters.to_torch).
"""

from __future__ import annotations

import numpy as np

from fastlstm.quantize import quantize
from fastlstm.spec import CellOptions, DirectionSpec, ModelSpec

SEED = 20240604  # fixed: every run of the benchmark sees the same weights and inputs
ONNX_OPSET = 17
ONNX_IR_VERSION = 8  # onnx >= 1.17 writes a newer IR than onnxruntime accepts


def make_spec(hidden: int, input_size: int | None = None, layers: int = 1, seed: int = SEED) -> ModelSpec:
    """A one-direction LSTM with weights ~ U(-1/sqrt(H), 1/sqrt(H)) (PyTorch's init), default cell."""
    H = int(hidden)
    I = int(input_size or hidden)
    rng = np.random.default_rng([seed, H, I, layers])
    bound = 1.0 / np.sqrt(H)

    def draw(*shape):
        return rng.uniform(-bound, bound, size=shape).astype(np.float32)

    stack = []
    for l in range(layers):
        n_in = I if l == 0 else H
        stack.append([DirectionSpec(W=draw(4 * H, n_in), R=draw(4 * H, H), b=draw(4 * H),
                                    options=CellOptions())])
    spec = ModelSpec(input_size=I, hidden_size=H, num_layers=layers, num_directions=1, proj_size=0,
                     layers=stack, source={"format": "benchmark", "seed": seed})
    return spec.validate()


def make_input(T: int, B: int, I: int, seed: int = SEED) -> np.ndarray:
    """x (T, B, I) float32 ~ N(0, 1), fixed seed."""
    rng = np.random.default_rng([seed, T, B, I, 1])
    return rng.standard_normal((T, B, I)).astype(np.float32)


def weight_bytes(spec: ModelSpec) -> int:
    """Bytes of R, the matrix every step has to stream: 4H x Hout float32 per layer."""
    return sum(ds.R.nbytes for layer in spec.layers for ds in layer)


class BenchModel:
    """One spec and its conversions. Conversions are built on first use and cached."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self._onnx = None
        self._torch = None
        self._below_fp32: dict = {}  # the quantized variants below, built once each

    @property
    def hidden(self) -> int:
        return self.spec.hidden_size

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    def onnx_bytes(self) -> bytes:
        """The serialized ONNX model: inputs X, initial_h, initial_c; outputs Y, Y_h, Y_c."""
        if self._onnx is None:
            model = _converter("to_onnx")(self.spec, opset=ONNX_OPSET, ir_version=ONNX_IR_VERSION,
                                          with_state=True)
            self._onnx = bare_lstm(model).SerializeToString()
        return self._onnx

    def torch_module(self):
        """A float32 eval-mode torch.nn.LSTM (time-major) holding the same weights."""
        if self._torch is None:
            self._torch = _converter("to_torch")(self.spec)
        return self._torch

    # ---- the same weights below fp32 (quantized_peers.py) ----------------------------------------
    def quantized_spec(self, weights: str) -> ModelSpec:
        """The spec with W and R quantized to 'fp16' | 'bf16' | 'int8' (fastlstm.quantize)."""
        return self._cached(("fastlstm", weights), lambda: quantize(self.spec, weights))

    def ort_int8_bytes(self, per_channel: bool) -> bytes:
        """onnxruntime.quantization.quantize_dynamic (QInt8) of onnx_bytes(): a DynamicQuantizeLSTM node."""
        from .accuracy import ort_quantize_dynamic

        return self._cached(("onnxruntime", per_channel),
                            lambda: ort_quantize_dynamic(self.onnx_bytes(), per_channel))

    def torch_dynamic(self, dtype: str):
        """torch.ao.quantization.quantize_dynamic of torch_module() to 'qint8' or 'float16'."""
        from .quantized_peers import torch_dynamic

        return self._cached(("torch", dtype), lambda: torch_dynamic(_converter("to_torch")(self.spec), dtype))

    def _cached(self, key, build):
        if key not in self._below_fp32:
            self._below_fp32[key] = build()
        return self._below_fp32[key]


class ConverterMissing(RuntimeError):
    """converters.to_onnx / to_torch is not available (an older converters package)."""


def _converter(name: str):
    import converters

    fn = getattr(converters, name, None)
    if fn is None:
        raise ConverterMissing(f"converters.{name} is not available")
    return fn


def bare_lstm(model):
    """Reduce a one-LSTM-node model to the bare node, ONNX Runtime's fastest form of it.

    The exporter wraps the node (Squeeze on Y, Concat on Y_h / Y_c) to match torch's output shapes;
    each extra node costs ONNX Runtime ~1 us per call, which would bias step latency against it.
    The bare graph has inputs X (T, B, I), initial_h, initial_c (1, B, H) and outputs Y (T, 1, B, H),
    Y_h, Y_c (1, B, H). Same node, same initializers: the weights are the converter's. Models with
    several LSTM nodes are returned unchanged.
    """
    from onnx import TensorProto, helper

    graph = model.graph
    lstms = [n for n in graph.node if n.op_type == "LSTM"]
    if len(lstms) != 1 or len(lstms[0].input) < 7:
        return model
    node = lstms[0]
    H = next(a.i for a in node.attribute if a.name == "hidden_size")
    I = graph.input[0].type.tensor_type.shape.dim[2].dim_value
    node_inputs = [*node.input[:5], "initial_h", "initial_c", *node.input[7:]]
    bare = helper.make_node("LSTM", node_inputs, ["Y", "Y_h", "Y_c"], name=node.name)
    bare.attribute.extend(node.attribute)
    used = set(node.input)
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in
              ((node.input[0], ["T", "B", I]), ("initial_h", [1, "B", H]), ("initial_c", [1, "B", H]))]
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in
               (("Y", ["T", 1, "B", H]), ("Y_h", [1, "B", H]), ("Y_c", [1, "B", H]))]
    new_graph = helper.make_graph([bare], graph.name, inputs, outputs,
                                  initializer=[t for t in graph.initializer if t.name in used])
    lean = helper.make_model(new_graph, opset_imports=model.opset_import, producer_name=model.producer_name)
    lean.ir_version = model.ir_version
    return lean


def io_names(onnx_bytes: bytes) -> dict[str, str]:
    """Names of the data input X and of the state inputs / outputs."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    return {"X": model.graph.input[0].name, "initial_h": "initial_h", "initial_c": "initial_c",
            "Y": "Y", "Y_h": "Y_h", "Y_c": "Y_c"}
