"""ONNX importer rules added for real exporter output (issue 16, item 0), on hand-made graphs:

- a layer chain whose Reshape fixes T and B (what the dynamo exporter writes) merges, checked at the
  sizes the graph declares, and --verify runs ONNX Runtime at those sizes;
- a wrong arrangement is still refused at those sizes;
- initial_h / initial_c: a constant must be zero (a converted model starts from the state passed to
  run/step) and every declared shape must fit the node."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_models import make_lstm_model
from specs import random_spec, rel_error

import converters
import fastlstm
from converters import from_onnx, to_onnx
from fastlstm import ConversionError

T, B, I, H = 5, 3, 4, 6


def _fixed_chain(num_directions=2, transpose=True, declare=True):
    """to_onnx's 2-layer chain with each layer's Y merged as the dynamo exporter does it: Transpose
    (T, D, B, H) -> (T, B, D, H), then Reshape to the fixed (T, B, D*H). Without the Transpose the
    Reshape mixes directions and batch rows."""
    spec = random_spec(I, H, num_layers=2, num_directions=num_directions, seed=3)
    model = to_onnx(spec)
    graph = model.graph
    merges = [n for n in graph.node if n.op_type in ("Squeeze", "Transpose", "Reshape")]
    outputs = {n.input[0]: n.output[0] for n in merges if n.op_type != "Reshape"}  # Y -> what reads it
    final = {n.input[0]: n.output[0] for n in merges if n.op_type == "Reshape"}
    for node in merges:
        graph.node.remove(node)
    graph.initializer.append(numpy_helper.from_array(np.array([T, B, num_directions * H], np.int64), "fixed"))
    nodes = []
    for node in graph.node:  # each layer's merge right after its LSTM node: the graph stays in order
        nodes.append(node)
        if node.op_type == "LSTM":
            y = node.output[0]
            out = final.get(outputs[y], outputs[y])  # layer{k}.out, or the graph's Y
            merged = y + ".tbdh" if transpose else y
            if transpose:
                nodes.append(helper.make_node("Transpose", [y], [merged], perm=[0, 2, 1, 3]))
            nodes.append(helper.make_node("Reshape", [merged, "fixed"], [out]))
    del graph.node[:]
    graph.node.extend(nodes)
    if declare:
        graph.input[0].CopyFrom(helper.make_tensor_value_info(graph.input[0].name, TensorProto.FLOAT, [T, B, I]))
    return spec, model


@pytest.mark.parametrize("num_directions", [1, 2])
def test_chain_with_fixed_reshape_merges(num_directions):
    spec, model = _fixed_chain(num_directions)
    got = from_onnx(model)
    assert got.num_layers == 2 and got.source["node"] == ["layer0.lstm", "layer1.lstm"]
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    engine = fastlstm.Engine(got)
    assert rel_error(engine.run(x)[0], fastlstm.Engine(spec).run(x)[0]) == 0.0
    measured = converters.verify(model, got, engine)
    assert measured["input_shape"] == [T, B, I] and measured["max_rel_error"] <= 2e-5


def test_fixed_reshape_sizes_come_from_the_reshape_alone():
    """No declared input shape: the Reshape's own constant target gives T and B."""
    _, model = _fixed_chain(declare=False)
    assert from_onnx(model).num_layers == 2


def test_fixed_reshape_without_transpose_is_still_refused():
    _, model = _fixed_chain(transpose=False)
    with pytest.raises(ConversionError, match="do not form one layer chain"):
        from_onnx(model)
    with pytest.raises(ConversionError, match="not the layer input"):
        from_onnx(model, node=["layer0.lstm", "layer1.lstm"])


# ------------------------------------------------------------------------------- initial states


def _with_constant_state(value_h, value_c=None):
    """make_lstm_model's node with initial_h (and initial_c) as initializers instead of graph inputs."""
    model, _ = make_lstm_model(I, H, state_inputs=False)
    node = next(n for n in model.graph.node if n.op_type == "LSTM")
    inputs = list(node.input) + [""] * (7 - len(node.input))
    for slot, name, value in ((5, "h0", value_h), (6, "c0", value_c)):
        if value is not None:
            model.graph.initializer.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
            inputs[slot] = name
    node.input[:] = inputs
    return model


def test_zero_constant_state_is_accepted():
    spec = from_onnx(_with_constant_state(np.zeros((1, 2, H)), np.zeros((1, 2, H))))
    assert spec.hidden_size == H


@pytest.mark.parametrize("which", ["h", "c"])
def test_non_zero_constant_state_is_refused(which):
    state = np.zeros((1, 2, H))
    state[0, 1, 2] = 0.5
    model = _with_constant_state(state if which == "h" else None, state if which == "c" else None)
    with pytest.raises(ConversionError, match=f"initial_{which} is a non-zero constant"):
        from_onnx(model)


@pytest.mark.parametrize("shape,match", [
    ((1, 2, H + 2), r"initial_c has shape \(1, 2, 8\), expected \(1, batch, 6\).*proj_size"),
    ((2, 2, H), r"initial_c has shape \(2, 2, 6\), expected \(1, batch, 6\)"),
    ((2, H), r"initial_c has shape \(2, 6\)"),
])
def test_state_that_does_not_fit_the_node_is_refused(shape, match):
    with pytest.raises(ConversionError, match=match):
        from_onnx(_with_constant_state(None, np.zeros(shape)))


def test_declared_shape_of_a_computed_state_is_checked():
    """A state computed from the input (zeros expanded to its batch) is not a constant: the shape the
    graph declares for it is checked, a symbolic batch allowed."""
    model, _ = make_lstm_model(I, H, state_inputs=False)
    node = next(n for n in model.graph.node if n.op_type == "LSTM")
    graph = model.graph
    graph.node.insert(0, helper.make_node("Shape", ["X"], ["x_shape"]))
    graph.node.insert(1, helper.make_node("ConstantOfShape", ["x_shape"], ["c0"],
                                          value=numpy_helper.from_array(np.zeros(1, np.float32))))
    node.input[:] = list(node.input) + [""] * (6 - len(node.input)) + ["c0"]
    graph.value_info.append(helper.make_tensor_value_info("c0", TensorProto.FLOAT, [1, "batch", H]))
    assert from_onnx(model).hidden_size == H
    graph.value_info[-1].CopyFrom(helper.make_tensor_value_info("c0", TensorProto.FLOAT, [1, "batch", H - 1]))
    with pytest.raises(ConversionError, match=r"initial_c has shape \(1, \?, 5\)"):
        from_onnx(model)
