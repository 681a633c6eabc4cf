"""Builders for small single-LSTM-node ONNX models, plus a thin ONNX Runtime runner.

Everything here is in ONNX's own conventions (gates i, o, f, c; B = [Wb, Rb]; P = [p_i, p_o, p_f]),
so tests exercise the importer's reordering rather than share it.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# ONNX LSTM attribute history: LSTM-7 (all options), LSTM-14 adds `layout`, LSTM-22 adds bfloat16.
ORT_IR_VERSION = 8  # onnx 1.23 writes IR 14 by default; onnxruntime accepts 3..10 here


def lstm_weights(input_size, hidden_size, num_directions=1, *, peephole=False, bias=True, seed=0,
                 scale=0.5):
    """Random ONNX-layout weights: W (D,4H,I), R (D,4H,H), B (D,8H) or None, P (D,3H) or None."""
    rng = np.random.default_rng(seed)
    D, H, I = num_directions, hidden_size, input_size

    def draw(*shape):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    return {
        "W": draw(D, 4 * H, I),
        "R": draw(D, 4 * H, H),
        "B": draw(D, 8 * H) if bias else None,
        "P": draw(D, 3 * H) if peephole else None,
    }


def make_lstm_model(
    input_size=3,
    hidden_size=4,
    *,
    direction="forward",
    activations=None,
    alphas=None,
    betas=None,
    clip=None,
    input_forget=None,
    peephole=False,
    bias=True,
    layout=None,
    opset=17,
    weights="initializer",
    seed=0,
    state_inputs=True,
    seq_lens_input=False,
    node_name="lstm",
    hidden_size_attr=True,
    scale=0.5,
    arrays=None,
):
    """One-LSTM-node model with graph inputs X [, sequence_lens, initial_h, initial_c] and
    outputs Y, Y_h, Y_c. Returns (model, arrays) where arrays holds the ONNX-layout weights.

    weights: "initializer" | "constant" (Constant nodes) | "computed" (built from constants through
    Unsqueeze / Concat / Transpose / Slice / Cast / Identity, folded by the importer).
    """
    D = 2 if direction == "bidirectional" else 1
    H, I = hidden_size, input_size
    arrays = arrays or lstm_weights(I, H, D, peephole=peephole, bias=bias, seed=seed, scale=scale)

    nodes, inits = [], []
    builders = {"initializer": _as_initializer, "constant": _as_constant, "computed": _as_computed}
    lstm_inputs = ["X"]
    for key in ("W", "R", "B"):
        if arrays.get(key) is None:
            lstm_inputs.append("")
            continue
        lstm_inputs.append(builders[weights](key, arrays[key], nodes, inits, opset))

    graph_inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, _x_shape(layout, I))]
    if seq_lens_input:
        lstm_inputs.append("sequence_lens")
        graph_inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["B"]))
    else:
        lstm_inputs.append("")
    state_shape = ["B", D, H] if layout == 1 else [D, "B", H]
    for name in ("initial_h", "initial_c"):
        if state_inputs:
            lstm_inputs.append(name)
            graph_inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, state_shape))
        else:
            lstm_inputs.append("")
    if arrays.get("P") is not None:
        lstm_inputs.append(builders[weights]("P", arrays["P"], nodes, inits, opset))
    while lstm_inputs[-1] == "":
        lstm_inputs.pop()

    attrs = {"direction": direction}
    if hidden_size_attr:
        attrs["hidden_size"] = H
    if activations is not None:
        attrs["activations"] = list(activations)
    if alphas is not None:
        attrs["activation_alpha"] = [float(a) for a in alphas]
    if betas is not None:
        attrs["activation_beta"] = [float(b) for b in betas]
    if clip is not None:
        attrs["clip"] = float(clip)
    if input_forget is not None:
        attrs["input_forget"] = int(input_forget)
    if layout is not None:
        attrs["layout"] = int(layout)
    nodes.append(helper.make_node("LSTM", lstm_inputs, ["Y", "Y_h", "Y_c"], name=node_name, **attrs))

    y_shape = ["B", "T", D, H] if layout == 1 else ["T", D, "B", H]
    outputs = [
        helper.make_tensor_value_info("Y", TensorProto.FLOAT, y_shape),
        helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, state_shape),
        helper.make_tensor_value_info("Y_c", TensorProto.FLOAT, state_shape),
    ]
    graph = helper.make_graph(nodes, "lstm_test", graph_inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="fastlstm-tests")
    model.ir_version = ORT_IR_VERSION
    return model, arrays


def _x_shape(layout, input_size):
    return ["B", "T", input_size] if layout == 1 else ["T", "B", input_size]


def _as_initializer(key, array, nodes, inits, opset):
    inits.append(numpy_helper.from_array(array, name=f"{key}_init"))
    return f"{key}_init"


def _as_constant(key, array, nodes, inits, opset):
    nodes.append(helper.make_node("Constant", [], [f"{key}_const"],
                                  value=numpy_helper.from_array(array, name="")))
    return f"{key}_const"


def _as_computed(key, array, nodes, inits, opset):
    """array (D, rows[, cols]) rebuilt from float64 per-direction halves, transposed and sliced."""
    out = f"{key}_computed"
    parts = []
    for d in range(array.shape[0]):
        # Stored transposed, as float64, with one junk row appended; fold undoes all three.
        stored = np.concatenate([array[d].T, np.full(array[d].T.shape[:-1] + (1,), 7.0, np.float32)],
                                axis=-1) if array.ndim == 3 else np.append(array[d], 7.0)
        name = f"{key}_{d}"
        nodes.append(helper.make_node("Constant", [], [f"{name}_raw"],
                                      value=numpy_helper.from_array(stored.astype(np.float64), "")))
        cur = f"{name}_raw"
        axis = stored.ndim - 1
        sliced = _slice(nodes, cur, f"{name}_sliced", stored.shape[-1] - 1, axis, opset)
        cur = sliced
        if array.ndim == 3:
            nodes.append(helper.make_node("Transpose", [cur], [f"{name}_t"], perm=[1, 0]))
            cur = f"{name}_t"
        nodes.append(helper.make_node("Cast", [cur], [f"{name}_f32"], to=TensorProto.FLOAT))
        parts.append(_unsqueeze0(nodes, f"{name}_f32", f"{name}_u", opset))
    nodes.append(helper.make_node("Concat", parts, [f"{key}_cat"], axis=0))
    nodes.append(helper.make_node("Identity", [f"{key}_cat"], [out]))
    return out


def _unsqueeze0(nodes, src, dst, opset):
    if opset >= 13:
        axes = f"{dst}_axes"
        nodes.append(helper.make_node("Constant", [], [axes], value_ints=[0]))
        nodes.append(helper.make_node("Unsqueeze", [src, axes], [dst]))
    else:
        nodes.append(helper.make_node("Unsqueeze", [src], [dst], axes=[0]))
    return dst


def _slice(nodes, src, dst, end, axis, opset):
    if opset >= 10:
        names = [f"{dst}_{k}" for k in ("starts", "ends", "axes")]
        for n, v in zip(names, ([0], [end], [axis]), strict=True):
            nodes.append(helper.make_node("Constant", [], [n], value=numpy_helper.from_array(
                np.array(v, np.int64), "")))
        nodes.append(helper.make_node("Slice", [src, *names], [dst]))
    else:
        nodes.append(helper.make_node("Slice", [src], [dst], starts=[0], ends=[end], axes=[axis]))
    return dst


def ort_session(model):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def ort_run(model, x, h0=None, c0=None, seq_lens=None):
    """Run `model` (ModelProto, bytes or session) on ONNX Runtime; inputs are fed by their graph names
    X (or the first input) / initial_h / initial_c / sequence_lens, as given (the caller handles layouts).
    Returns {output name: array}."""
    sess = model if hasattr(model, "run") else ort_session(model)
    names = [i.name for i in sess.get_inputs()]
    x_name = "X" if "X" in names or not names else names[0]  # torch exports call it "input"
    given = {x_name: x, "initial_h": h0, "initial_c": c0, "sequence_lens": seq_lens}
    feeds = {}
    for key, value in given.items():
        if value is None:
            continue
        if key not in names:
            raise ValueError(f"model has no input {key!r} (inputs: {names})")
        dtype = np.int32 if key == "sequence_lens" else np.float32
        feeds[key] = np.ascontiguousarray(value, dtype=dtype)
    outs = sess.run(None, feeds)
    return {o.name: v for o, v in zip(sess.get_outputs(), outs, strict=True)}


def onnx_y_to_time_major(y, layout=0):
    """ONNX Y (T,D,B,H) (layout 0) or (B,T,D,H) (layout 1) -> (T, B, D*H)."""
    if layout == 1:
        y = y.transpose(1, 0, 2, 3)
    else:
        y = y.transpose(0, 2, 1, 3)
    return y.reshape(y.shape[0], y.shape[1], -1)


def find_lstm(graph, name, outer=()):
    """-> (node, [graph, enclosing graphs...]) for the LSTM node named `name` anywhere in `graph`."""
    for node in graph.node:
        if node.op_type == "LSTM" and node.name == name:
            return node, [graph, *outer]
        for attr in node.attribute:
            subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subs:
                found = find_lstm(sub, name, (graph, *outer))
                if found:
                    return found
    return None


def extract_lstm(model, name):
    """A model of one LSTM node (found in any subgraph) plus the original nodes computing its weights,
    copied verbatim so ONNX Runtime evaluates them, with inputs X / initial_h / initial_c (float32)."""
    node, scopes = find_lstm(model.graph, name)
    producers, inits, order = {}, {}, {}
    for g in reversed(scopes):  # outermost first
        inits.update({t.name: t for t in g.initializer})
        for n in g.node:
            order[id(n)] = len(order)
            producers.update({o: n for o in n.output})
    keep, used, stack = {}, {}, [node.input[k] for k in (1, 2, 3, 7) if k < len(node.input)]
    while stack:
        value = stack.pop()
        if not value or value in used:
            continue
        if value in inits:
            used[value] = inits[value]
        elif id(producers[value]) not in keep:
            keep[id(producers[value])] = producers[value]
            stack.extend(producers[value].input)
    ins = list(node.input) + [""] * (8 - len(node.input))
    ins[0], ins[4], ins[5], ins[6] = "X", "", "initial_h", "initial_c"
    lstm = helper.make_node("LSTM", ins, ["Y", "Y_h", "Y_c"], name=name)
    lstm.attribute.extend(node.attribute)
    graph = helper.make_graph(
        sorted(keep.values(), key=lambda n: order[id(n)]) + [lstm],
        "extracted",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("X", "initial_h", "initial_c")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Y", "Y_h", "Y_c")],
        initializer=list(used.values()),
    )
    out = helper.make_model(graph, opset_imports=list(model.opset_import))
    out.ir_version = ORT_IR_VERSION
    return out
