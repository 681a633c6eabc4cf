"""Whole-model ONNX import on hand-built graphs, against ONNX Runtime on the same graphs.

tf2onnx-style graphs (Keras: float token ids Cast to int, Transpose to time-major, Y_h squeezed, Dense as
MatMul + Add, Softmax) are built here from what tf2onnx is documented to emit (no TensorFlow installed);
Gemm with alpha / beta / transB = 0, LayerNormalization, a dense input layer, state and sequence_lens
inputs; and graphs that must NOT be covered (an unsupported op, glue that mixes rows, a Reshape fixed
to one T): those convert the LSTM part and say so in one line.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_models import lstm_weights, ort_session
from specs import random_spec, rel_error

import converters
import fastlstm
from fastlstm.cli import main as cli_main

TOL = 2e-5
I, H, V = 6, 10, 40
rng = np.random.default_rng(11)


class Graph:
    """A tiny graph builder: nodes, initializers, one LSTM node (ONNX weights), ORT-readable model."""

    def __init__(self):
        self.nodes, self.inits, self.inputs, self.outputs = [], [], [], []
        self.count = 0

    def const(self, array, dtype=np.float32) -> str:
        self.count += 1
        name = f"c{self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(array, dtype), name))
        return name

    def op(self, op_type, inputs, n_out=1, **attrs):
        self.count += 1
        outs = [f"v{self.count}_{k}" for k in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=f"{op_type}_{self.count}", **attrs))
        return outs[0] if n_out == 1 else outs

    def lstm(self, x, I, direction="forward", state=("", ""), lens=""):
        D = 2 if direction == "bidirectional" else 1
        w = lstm_weights(I, H, D, seed=self.count)
        inputs = [x, self.const(w["W"]), self.const(w["R"]), self.const(w["B"]), lens, *state]
        while inputs[-1] == "":
            inputs.pop()
        return self.op("LSTM", inputs, 3, hidden_size=H, direction=direction)

    def model(self, opset=17) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "g", self.inputs, self.outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        return model


def ort(model, **feeds):
    return ort_session(model).run(None, feeds)


def convert(model, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return converters.from_onnx(model, **kwargs)


def keras_classifier(return_sequences: bool):
    """tf2onnx's Keras Embedding -> LSTM -> Dense(softmax): float ids (B, T), Cast, Gather, Transpose."""
    g = Graph()
    g.inputs.append(helper.make_tensor_value_info("ids", TensorProto.FLOAT, ["B", "T"]))
    idx = g.op("Cast", ["ids"], to=TensorProto.INT32)
    emb = g.op("Gather", [g.const(rng.normal(0, 1, (V, I))), idx])
    tm = g.op("Transpose", [emb], perm=[1, 0, 2])
    y, y_h, _ = g.lstm(tm, I)
    if return_sequences:  # Y (T, 1, B, H) -> (T, B, H) -> (B, T, H)
        seq = g.op("Squeeze", [y, g.const([1], np.int64)])
        z = g.op("Transpose", [seq], perm=[1, 0, 2])
        z = g.op("Relu", [g.op("Add", [g.op("MatMul", [z, g.const(rng.normal(0, .5, (H, 8)))]),
                                       g.const(rng.normal(0, .3, 8))])])
    else:  # Y_h (1, B, H) -> (B, H)
        z = g.op("Squeeze", [y_h, g.const([0], np.int64)])
    width = 8 if return_sequences else H
    z = g.op("Add", [g.const(rng.normal(0, .3, 5)), g.op("MatMul", [z, g.const(rng.normal(0, .5, (width, 5)))])])
    out = g.op("Softmax", [z], axis=-1)
    g.outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, None))
    return g.model()


@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
def test_tf2onnx_style_keras_classifier(return_sequences):
    model = keras_classifier(return_sequences)
    spec = convert(model)
    kinds = [type(x).__name__ for x in spec.pre + spec.post]
    assert kinds == (["Embedding", "Linear", "Linear"] if return_sequences else ["Embedding", "SelectLast", "Linear"])
    assert spec.source["batch_first"] is True
    ids = rng.integers(0, V, (3, 7)).astype(np.float32)  # Keras takes float ids
    (ref,) = ort(model, ids=ids)
    y, _ = fastlstm.Engine(spec).run(ids, batch_first=True)
    assert rel_error(y, ref) <= TOL


def test_dense_input_gemm_head_and_layer_norm():
    """Features (T, B, F) -> MatMul + Add + Tanh -> LSTM -> Reshape (-1, H) -> Gemm(alpha, beta, transB=0)
    -> Relu -> LayerNormalization -> Gemm -> Reshape (T, B, C) from Shape(x) -> LogSoftmax."""
    g = Graph()
    F, C = 5, 7
    g.inputs.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "B", F]))
    z = g.op("MatMul", ["x", g.const(rng.normal(0, .5, (F, I)))])
    z = g.op("Tanh", [g.op("Add", [z, g.const(rng.normal(0, .3, I))])])
    y, _, _ = g.lstm(z, I)
    rows = g.op("Reshape", [g.op("Squeeze", [y, g.const([1], np.int64)]), g.const([-1, H], np.int64)])
    z = g.op("Gemm", [rows, g.const(rng.normal(0, .5, (H, 9))), g.const(rng.normal(0, .3, (1, 9)))],
             alpha=0.5, beta=2.0)
    z = g.op("Relu", [z])
    z = g.op("LayerNormalization", [z, g.const(rng.normal(1, .1, 9)), g.const(rng.normal(0, .1, 9))], epsilon=1e-3)
    z = g.op("Gemm", [z, g.const(rng.normal(0, .5, (C, 9))), g.const(rng.normal(0, .3, C))], transB=1)
    tb = g.op("Slice", [g.op("Shape", ["x"]), g.const([0], np.int64), g.const([2], np.int64)])
    z = g.op("Reshape", [z, g.op("Concat", [tb, g.const([C], np.int64)], axis=0)])
    out = g.op("LogSoftmax", [z], axis=2)
    g.outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, None))
    model = g.model()
    spec = convert(model)
    assert [x.describe() for x in spec.pre] == ["Linear(5 -> 6) + tanh"]
    assert [type(x).__name__ for x in spec.post] == ["Linear", "LayerNorm", "Linear"]
    x = rng.normal(0, 1, (8, 3, F)).astype(np.float32)
    (ref,) = ort(model, x=x)
    assert rel_error(fastlstm.Engine(spec).run(x)[0], ref) <= TOL


def test_state_and_sequence_lens_inputs_and_h_n_output():
    """converters.to_onnx's graph (X, sequence_lens, initial_h/c -> Y, Y_h, Y_c) with a head on Y: the state
    inputs are the engine's State, sequence_lens its argument, Y_h / Y_c the final State."""
    model = converters.to_onnx(random_spec(I, H, num_layers=2, seed=5), with_state=True, with_sequence_lens=True)
    g = model.graph
    w = numpy_helper.from_array(rng.normal(0, .5, (H, 4)).astype(np.float32), "head_w")
    g.initializer.append(w)
    g.node.append(helper.make_node("MatMul", ["Y", "head_w"], ["logits"]))
    g.node.append(helper.make_node("Sigmoid", ["logits"], ["probs"]))
    out = helper.make_tensor_value_info("probs", TensorProto.FLOAT, None)
    outputs = [out] + [o for o in g.output if o.name != "Y"]
    del g.output[:]
    g.output.extend(outputs)
    spec = convert(model)
    assert spec.source["model"]["state_inputs"] == {"h": "initial_h", "c": "initial_c"}
    assert spec.source["model"]["state_outputs"] == {"h": "Y_h", "c": "Y_c"}
    assert spec.source["model"]["sequence_lens"] == "sequence_lens"
    eng = fastlstm.Engine(spec)
    x = rng.normal(0, 1, (6, 3, I)).astype(np.float32)
    lens = np.array([6, 2, 4], np.int32)
    st = eng.new_state(3)
    st.h[...] = rng.normal(0, .5, st.h.shape)
    st.c[...] = rng.normal(0, .5, st.c.shape)
    probs, y_h, y_c = ort(model, X=x, sequence_lens=lens, initial_h=st.h.reshape(2, 3, H),
                          initial_c=st.c.reshape(2, 3, H))
    y, final = eng.run(x, st, sequence_lens=lens)
    mask = np.arange(6)[:, None] < lens  # past a length ONNX writes zeros to Y, so its head sees zeros too
    assert rel_error(y[mask], probs[mask]) <= TOL
    assert rel_error(final.h.reshape(2, 3, H), y_h) <= TOL and rel_error(final.c.reshape(2, 3, H), y_c) <= TOL


# --------------------------------------------------------------------------------- not covered


def _with_head(extra):
    """X (T, B, I) float -> LSTM -> Squeeze -> MatMul -> extra(g, z) -> output."""
    g = Graph()
    g.inputs.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "B", I]))
    y, _, _ = g.lstm("x", I)
    z = g.op("MatMul", [g.op("Squeeze", [y, g.const([1], np.int64)]), g.const(rng.normal(0, .5, (H, 3)))])
    g.outputs.append(helper.make_tensor_value_info(extra(g, z), TensorProto.FLOAT, None))
    return g.model()


NOT_COVERED = {
    "unsupported_op": (lambda g, z: g.op("Mul", [z, g.const(2.0)]), r"Mul 'Mul_\d+': no fastlstm layer"),
    "mixes_rows": (lambda g, z: g.op("Transpose", [z], perm=[0, 2, 1]), "does not keep each row's 3 features"),
    "fixed_T": (lambda g, z: g.op("Reshape", [z, g.const([3, -1, 3], np.int64)]), r"cannot evaluate"),
    "two_branches": (lambda g, z: g.op("Add", [z, g.op("Relu", [z])]), "combines 2 data inputs"),
}


@pytest.mark.parametrize("case", list(NOT_COVERED))
def test_not_covered_converts_the_lstm_part_and_says_why(case, tmp_path, capsys):
    extra, reason = NOT_COVERED[case]
    model = _with_head(extra)
    with pytest.warns(UserWarning, match="converted the LSTM part only"):
        spec = converters.from_onnx(model)
    assert not spec.pre and not spec.post
    assert spec.source["not_covered"].count("covered: input 'x'") == 1
    assert re.search(reason, spec.source["not_covered"]), spec.source["not_covered"]
    src, dst = tmp_path / "m.onnx", tmp_path / "m.fastlstm"
    onnx.save(model, src)
    assert cli_main(["convert", str(src), "-o", str(dst)]) == 0
    out, err = capsys.readouterr()
    assert len(err.splitlines()) == 1 and err.startswith("fastlstm convert: note: converted the LSTM part only")
    assert "--lstm-only" in err and re.search(reason, err)
    assert cli_main(["convert", str(src), "-o", str(dst), "--lstm-only"]) == 0  # asked for: no note
    assert capsys.readouterr().err == ""
    assert fastlstm.load(dst).spec.post == []


def test_bare_lstm_graph_converts_silently():
    """A graph of LSTM nodes and glue only: the LSTM spec as always, no note, no warning."""
    model = converters.to_onnx(random_spec(I, H, num_layers=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec = converters.from_onnx(model)
    assert spec.pre == [] and spec.post == [] and "not_covered" not in spec.source


def test_verify_runs_the_whole_graph(tmp_path, capsys):
    model = keras_classifier(False)
    src, dst = tmp_path / "k.onnx", tmp_path / "k.fastlstm"
    onnx.save(model, src)
    assert cli_main(["convert", str(src), "-o", str(dst), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "verify against onnxruntime" in out and "Embedding(vocab 40, dim 6) -> 1-layer LSTM" in out
    assert fastlstm.load(dst).spec.verify["input_shape"] == [2, 16]  # (B, T) float ids, as the model takes


@pytest.mark.parametrize("weights", ["int8", "fp16"])
def test_quantized_whole_model_verifies(tmp_path, capsys, weights):
    """convert --weights of a whole graph: the LSTM's W and R quantized, the layers around it fp32; --verify
    runs ONNX Runtime on the whole graph within the type's tolerance and measures what quantization costs
    on the model's own inputs (token ids)."""
    model = keras_classifier(True)
    src, dst = tmp_path / "k.onnx", tmp_path / "k.fastlstm"
    onnx.save(model, src)
    assert cli_main(["convert", str(src), "-o", str(dst), "--weights", weights, "--verify"]) == 0
    out = capsys.readouterr().out
    assert f"{weights} weights" in out and "verify against onnxruntime" in out
    eng = fastlstm.load(dst)
    assert eng.plan.weights == weights and eng.spec.post[-1].weight.dtype == np.float32
    assert eng.spec.verify["weights"] == weights and eng.spec.verify["quantization"]["max_abs_error"] > 0
    ids = rng.integers(0, V, (3, 7)).astype(np.float32)
    (ref,) = ort(model, ids=ids)
    y, _ = eng.run(ids, batch_first=True)
    assert rel_error(y, ref) <= (5e-3 if weights == "fp16" else 3e-2)
