"""fastlstm ModelSpec -> ONNX: one LSTM node per layer, chained the way torch.onnx.export chains them.

Graph (L layers, D directions, H hidden; T and B are dynamic):
    inputs   X (T, B, I)  [initial_h (L*D, B, H), initial_c (L*D, B, H)]  [sequence_lens (B,) int32]
    layer l  LSTM -> Y_l (T, D, B, H) -> Squeeze(1) (D=1) | Transpose(0,2,1,3)+Reshape(0,0,-1) (D=2)
             -> (T, B, D*H), the next layer's X
    outputs  Y (T, B, D*H) of the last layer; Y_h, Y_c (L*D, B, H) stacked over layers (torch's h_n/c_n)

Needs no torch. Weights go back to ONNX order (gates i, o, f, c; B = [b, 0]; P = [p_i, p_o, p_f]).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fastlstm.errors import ConversionError
from fastlstm.quantized import as_float32
from fastlstm.spec import ACTIVATIONS, DEFAULT_ACTIVATIONS, ModelSpec

# canonical gate blocks (i, f, g, o) -> ONNX (i, o, f, c); canonical peephole rows -> ONNX (i, o, f)
_GATES_TO_ONNX = (0, 3, 1, 2)
_PEEPHOLE_TO_ONNX = (0, 2, 1)
MIN_OPSET, MAX_OPSET = 7, 22


def to_onnx(spec: ModelSpec, opset: int = 17, ir_version: int = 8, *, with_state: bool = False,
            with_sequence_lens: bool = False) -> onnx.ModelProto:
    """Write `spec` as an ONNX model of chained LSTM nodes (see the module docstring for the graph).

    with_state adds inputs initial_h / initial_c; with_sequence_lens adds input sequence_lens.
    Projected specs (proj_size > 0) have no ONNX LSTM equivalent and raise ConversionError."""
    spec.validate()
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConversionError(f"opset must be in {MIN_OPSET}..{MAX_OPSET}, got {opset}")
    if spec.proj_size:
        raise ConversionError(
            f"ONNX LSTM has no projection: cannot export a spec with proj_size={spec.proj_size}"
        )
    b = _Builder(opset)
    L, D, H, I = spec.num_layers, spec.num_directions, spec.hidden_size, spec.input_size
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", I])]
    if with_sequence_lens:
        inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["B"]))
    if with_state:
        for name in ("initial_h", "initial_c"):
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [L * D, "B", H]))

    x, y_h, y_c = "X", [], []
    for l, layer in enumerate(spec.layers):
        prefix = f"layer{l}"
        node_inputs = [x, *_weights(b, prefix, layer, H)]
        node_inputs.append("sequence_lens" if with_sequence_lens else "")
        for name in ("initial_h", "initial_c"):
            node_inputs.append(_layer_slice(b, name, l, D, L) if with_state else "")
        node_inputs.append(_peephole(b, prefix, layer, H))
        while node_inputs[-1] == "":
            node_inputs.pop()
        outs = [f"{prefix}.Y", f"{prefix}.Y_h", f"{prefix}.Y_c"]
        b.nodes.append(helper.make_node("LSTM", node_inputs, outs, name=f"{prefix}.lstm",
                                        **_attributes(layer, H, f"layer {l}")))
        x = _to_sequence(b, outs[0], D, prefix, "Y" if l == L - 1 else f"{prefix}.out")
        y_h.append(outs[1])
        y_c.append(outs[2])
    for name, parts in (("Y_h", y_h), ("Y_c", y_c)):
        b.nodes.append(helper.make_node("Concat", parts, [name], axis=0))

    outputs = [
        helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["T", "B", D * H]),
        helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [L * D, "B", H]),
        helper.make_tensor_value_info("Y_c", TensorProto.FLOAT, [L * D, "B", H]),
    ]
    graph = helper.make_graph(b.nodes, "fastlstm", inputs, outputs, initializer=b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="fastlstm", producer_version=_version())
    model.ir_version = ir_version
    return model


class _Builder:
    def __init__(self, opset):
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name, array) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array), name=name))
        return name


def _weights(b: _Builder, prefix, layer, H):
    """W (D,4H,I), R (D,4H,H), B (D,8H) in ONNX order."""
    def onnx_gates(a):
        return np.asarray(a, np.float32).reshape((4, H) + a.shape[1:])[list(_GATES_TO_ONNX)].reshape(a.shape)

    W = np.stack([onnx_gates(as_float32(ds.W)) for ds in layer])  # quantized weights export as float32
    R = np.stack([onnx_gates(as_float32(ds.R)) for ds in layer])
    B = np.stack([np.concatenate([onnx_gates(ds.b), np.zeros(4 * H, np.float32)]) for ds in layer])
    return b.const(f"{prefix}.W", W), b.const(f"{prefix}.R", R), b.const(f"{prefix}.B", B)


def _peephole(b: _Builder, prefix, layer, H) -> str:
    if all(ds.peephole is None for ds in layer):
        return ""
    rows = [np.zeros((3, H), np.float32) if ds.peephole is None else ds.peephole for ds in layer]
    P = np.stack([r[list(_PEEPHOLE_TO_ONNX)].reshape(3 * H) for r in rows]).astype(np.float32)
    return b.const(f"{prefix}.P", P)


def _attributes(layer, H, where) -> dict:
    D = len(layer)
    opts = [ds.options for ds in layer]
    for field in ("clip", "input_forget"):
        if len({getattr(o, field) for o in opts}) > 1:
            raise ConversionError(f"{where}: ONNX LSTM needs one {field} for both directions, "
                                  f"found {[getattr(o, field) for o in opts]}")
    if D == 2:
        direction = "bidirectional"
    else:
        direction = "reverse" if layer[0].reverse else "forward"
    attrs = {"hidden_size": H, "direction": direction}
    if any(o.activations != DEFAULT_ACTIVATIONS for o in opts):
        attrs["activations"] = [name for o in opts for name in o.activations]
    # Flat lists consumed in order by the activations that take the parameter; written out in full so
    # no runtime default is ever relied on.
    alphas = [a for o in opts for name, a in zip(o.activations, o.alphas, strict=True)
              if ACTIVATIONS[name][0] is not None]
    betas = [v for o in opts for name, v in zip(o.activations, o.betas, strict=True)
             if ACTIVATIONS[name][1] is not None]
    if alphas:
        attrs["activation_alpha"] = [float(a) for a in alphas]
    if betas:
        attrs["activation_beta"] = [float(v) for v in betas]
    if opts[0].clip is not None:
        attrs["clip"] = float(opts[0].clip)
    if opts[0].input_forget:
        attrs["input_forget"] = 1
    return attrs


def _layer_slice(b: _Builder, name, l, D, L) -> str:
    """initial_h/c (L*D, B, H) -> this layer's (D, B, H)."""
    if L == 1:
        return name
    out = f"{name}.layer{l}"
    if b.opset >= 10:
        starts = b.const(f"{out}.starts", np.array([l * D], np.int64))
        ends = b.const(f"{out}.ends", np.array([(l + 1) * D], np.int64))
        axes = b.const(f"{out}.axes", np.array([0], np.int64))
        b.nodes.append(helper.make_node("Slice", [name, starts, ends, axes], [out]))
    else:
        b.nodes.append(helper.make_node("Slice", [name], [out], starts=[l * D], ends=[(l + 1) * D],
                                        axes=[0]))
    return out


def _to_sequence(b: _Builder, y, D, prefix, out) -> str:
    """Y (T, D, B, H) -> (T, B, D*H)."""
    if D == 1:
        if b.opset >= 13:
            axes = b.const(f"{prefix}.squeeze_axes", np.array([1], np.int64))
            b.nodes.append(helper.make_node("Squeeze", [y, axes], [out]))
        else:
            b.nodes.append(helper.make_node("Squeeze", [y], [out], axes=[1]))
        return out
    b.nodes.append(helper.make_node("Transpose", [y], [f"{prefix}.Y_tbdh"], perm=[0, 2, 1, 3]))
    shape = b.const(f"{prefix}.merge_shape", np.array([0, 0, -1], np.int64))
    b.nodes.append(helper.make_node("Reshape", [f"{prefix}.Y_tbdh", shape], [out]))
    return out


def _version() -> str:
    try:
        from fastlstm import __version__
    except ImportError:  # pragma: no cover
        return ""
    return __version__
