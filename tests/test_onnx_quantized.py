"""ONNX Runtime's com.microsoft.DynamicQuantizeLSTM -> an int8 fastlstm model (issue #13).

Oracles: ONNX Runtime running the original quantized node, and ONNX Runtime running a standard LSTM on
the float32 weights the node stands for ((q - zero_point) * scale, computed here from the node's own
tensors). Models come from onnxruntime.quantization.quantize_dynamic and from hand-built nodes for
what quantize_dynamic never writes (uint8 weights, zero points, asymmetric ranges).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_models import ORT_IR_VERSION, make_lstm_model, onnx_y_to_time_major, ort_run
from specs import rel_error

import converters
import fastlstm
from fastlstm import ConversionError
from fastlstm.benchmarking.accuracy import ort_quantize_dynamic
from fastlstm.spec import DirectionSpec, ModelSpec

pytest.importorskip("onnxruntime")


def pytorch_init_spec(I, H, layers, directions, seed):
    """nn.LSTM's default init, U(-1/sqrt(H), 1/sqrt(H)), canonical layout."""
    rng = np.random.default_rng(seed)
    k = 1 / np.sqrt(H)
    stack = []
    for l in range(layers):
        n_in = I if l == 0 else directions * H
        stack.append([DirectionSpec(W=rng.uniform(-k, k, (4 * H, n_in)), R=rng.uniform(-k, k, (4 * H, H)),
                                    b=rng.uniform(-k, k, 4 * H), reverse=bool(d)) for d in range(directions)])
    return ModelSpec(I, H, layers, directions, 0, stack).validate()


@pytest.fixture(scope="module")
def bidirectional_2layer():
    """A bidirectional 2-layer LSTM (H = 64), its ONNX model and input N(0, 1), T = 100, B = 2."""
    spec = pytorch_init_spec(16, 64, 2, 2, seed=11)
    model = converters.to_onnx(spec, opset=17, ir_version=ORT_IR_VERSION)
    x = np.random.default_rng(12).standard_normal((100, 2, 16)).astype(np.float32)
    y_fp32 = ort_run(model, x)["Y"]
    return spec, model, x, y_fp32


def dequantized_lstm_model(qmodel: onnx.ModelProto) -> onnx.ModelProto:
    """The quantized model with each DynamicQuantizeLSTM replaced by a standard LSTM on (q - zp) * scale,
    computed here from the node's tensors: ONNX LSTM layout W (D, 4H, I), R (D, 4H, H)."""
    model = onnx.ModelProto()
    model.CopyFrom(qmodel)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        if node.op_type != "DynamicQuantizeLSTM":
            nodes.append(node)
            continue
        names = list(node.input)
        for k, (q_slot, s_slot, z_slot) in enumerate(((1, 8, 9), (2, 10, 11))):
            q = inits[names[q_slot]].astype(np.float32)  # (D, K, 4H)
            D = q.shape[0]
            scale = inits[names[s_slot]].reshape(D, 1, -1).astype(np.float32)
            zero = inits[names[z_slot]].reshape(D, 1, -1).astype(np.float32)
            w = ((q - zero) * scale).transpose(0, 2, 1)
            name = f"{node.name}.dequantized.{k}"
            model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w, np.float32), name))
            names[q_slot] = name
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        nodes.append(helper.make_node("LSTM", names[:8], list(node.output), name=node.name + ".fp32", **attrs))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
def test_quantize_dynamic_bidirectional_2layer(bidirectional_2layer, per_channel):
    """Converts exactly (no requantization), runs the node's weights (ORT's float LSTM on them within
    2e-5), stays within 2x ORT's own quantization error of ORT's int8 outputs, and is closer to the fp32
    original than ORT is (ORT also quantizes x and h every step; we keep them float32)."""
    spec, model, x, y_fp32 = bidirectional_2layer
    qmodel = onnx.load_from_string(ort_quantize_dynamic(model.SerializeToString(), per_channel))
    assert sum(n.op_type == "DynamicQuantizeLSTM" for n in qmodel.graph.node) == 2
    q = converters.from_onnx(qmodel)
    assert q.weights == "int8" and q.num_layers == 2 and q.num_directions == 2
    notes = q.source["quantized"]["nodes"]
    assert [n["requantized"] for n in notes] == [[], []]
    assert {n["scales"]["W"] for n in notes} == {"row" if per_channel else "tensor"}

    ours, _ = fastlstm.Engine(q).run(x)
    y_dequantized = ort_run(dequantized_lstm_model(qmodel), x)["Y"]  # (T, B, 2H): the chain's own reshape
    assert rel_error(ours, y_dequantized) <= 2e-5
    y_ort = ort_run(qmodel, x)["Y"]
    ort_error = np.abs(y_ort - y_fp32).max()
    assert np.abs(ours - y_ort).max() <= 2 * ort_error
    assert np.abs(ours - y_fp32).max() < ort_error


def test_node_choice_and_mixed_chains(bidirectional_2layer):
    spec, model, x, y_fp32 = bidirectional_2layer
    qmodel = onnx.load_from_string(ort_quantize_dynamic(model.SerializeToString(), False))
    names = [n.name for n in qmodel.graph.node if n.op_type == "DynamicQuantizeLSTM"]
    second = converters.from_onnx(qmodel, node=names[1])
    assert second.num_layers == 1 and second.input_size == 128 and second.weights == "int8"
    # quantize_dynamic with one node excluded: one fp32 LSTM, one int8; the spec keeps both exact in fp32
    import logging
    import os
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "a.onnx"), os.path.join(tmp, "b.onnx")
        onnx.save(model, src)
        logging.getLogger().setLevel(logging.ERROR)
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, nodes_to_exclude=["layer1.lstm"])
        mixed = onnx.load(dst)
    assert [n.op_type for n in mixed.graph.node if "LSTM" in n.op_type] == ["DynamicQuantizeLSTM", "LSTM"]
    m = converters.from_onnx(mixed)
    assert m.weights == "fp32" and m.source["quantized"]["weights"] == "fp32"
    ours, _ = fastlstm.Engine(m).run(x)
    assert rel_error(ours, ort_run(dequantized_lstm_model(mixed), x)["Y"]) <= 2e-5


# ------------------------------------------------------------------------- hand-built nodes


def dq_lstm_model(W, R, B, q_params, hidden, direction="forward"):
    """One DynamicQuantizeLSTM node. W (D, 4H, I), R (D, 4H, H) float ONNX layout are quantized here by
    q_params(name, w (D, 4H, K)) -> (q (D, K, 4H) int8/uint8, scale, zero_point)."""
    inits, inputs = [], ["X"]
    quant = {}
    for name, w in (("W", W), ("R", R)):
        q, scale, zero = q_params(name, w)
        quant[name] = (q, scale, zero)
        inits.append(numpy_helper.from_array(q, f"{name}_q"))
        inputs.append(f"{name}_q")
    inits.append(numpy_helper.from_array(B, "B"))
    inputs += ["B", "", "", "", ""]
    for name in ("W", "R"):
        _, scale, zero = quant[name]
        inits += [numpy_helper.from_array(scale, f"{name}_scale"), numpy_helper.from_array(zero, f"{name}_zp")]
        inputs += [f"{name}_scale", f"{name}_zp"]
    D = W.shape[0]
    node = helper.make_node("DynamicQuantizeLSTM", inputs, ["Y"], name="qlstm", domain="com.microsoft",
                            hidden_size=hidden, direction=direction)
    graph = helper.make_graph([node], "q",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", W.shape[2]])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["T", D, "B", hidden])],
                              initializer=inits)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = ORT_IR_VERSION
    return model


def uint8_symmetric(name, w):
    """uint8 with zero point 128 and a per-tensor scale max|w| / 127: q - 128 in [-127, 127] (exact)."""
    scale = (np.abs(w).reshape(w.shape[0], -1).max(1) / 127).astype(np.float32)  # (D,)
    q = np.clip(np.rint(w / scale[:, None, None]) + 128, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(q.transpose(0, 2, 1)), scale, np.full(w.shape[0], 128, np.uint8)


def int8_row_scales(name, w):
    """int8, zero point 0, one scale per gate row (ORT's per_channel layout)."""
    scale = (np.abs(w).max(2) / 127).astype(np.float32)  # (D, 4H)
    q = np.clip(np.rint(w / scale[:, :, None]), -127, 127).astype(np.int8)
    return np.ascontiguousarray(q.transpose(0, 2, 1)), scale, np.zeros(scale.shape, np.int8)


def uint8_asymmetric(name, w):
    """uint8 over the tensor's (min, max) with its own zero point (ORT's kernel takes one zero point per
    matrix): q - zp reaches past [-127, 127], so the converter requantizes per row."""
    w = w + 0.1  # off-centre
    lo, hi = np.minimum(w.reshape(w.shape[0], -1).min(1), 0), np.maximum(w.reshape(w.shape[0], -1).max(1), 0)
    scale = ((hi - lo) / 255).astype(np.float32)  # (D,)
    zero = np.clip(np.rint(-lo / scale), 0, 255).astype(np.uint8)
    q = np.clip(np.rint(w / scale[:, None, None]) + zero[:, None, None], 0, 255).astype(np.uint8)
    return np.ascontiguousarray(q.transpose(0, 2, 1)), scale, zero


def _hand_built(q_params, direction="forward"):
    D = 2 if direction == "bidirectional" else 1
    _, arrays = make_lstm_model(6, 8, direction=direction, seed=5, scale=0.3)
    return dq_lstm_model(arrays["W"], arrays["R"], arrays["B"], q_params, 8, direction), D


@pytest.mark.parametrize("q_params,requantized", [(uint8_symmetric, []), (int8_row_scales, []),
                                                  (uint8_asymmetric, ["W", "R"])])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_uint8_weights_with_zero_points(q_params, requantized, direction):
    qmodel, D = _hand_built(q_params, direction)
    x = np.random.default_rng(6).standard_normal((20, 3, 6)).astype(np.float32)
    q = converters.from_onnx(qmodel)
    assert q.weights == "int8" and q.source["quantized"]["nodes"][0]["requantized"] == requantized
    ours, _ = fastlstm.Engine(q).run(x)
    exact = onnx_y_to_time_major(ort_run(dequantized_lstm_model(qmodel), x)["Y"])
    if requantized:  # per row to [-127, 127]: at most max|row| / 254 more per weight (docs/quantization.md)
        assert 1e-6 < np.abs(ours - exact).max() <= 1e-2
    else:
        assert rel_error(ours, exact) <= 2e-5
    y_ort = onnx_y_to_time_major(ort_run(qmodel, x)["Y"])  # ORT runs the node (x and h quantized too)
    ort_error = np.abs(y_ort - exact).max()
    assert np.abs(ours - y_ort).max() <= 2 * ort_error and np.abs(ours - exact).max() < ort_error


@pytest.mark.parametrize("edit,match", [
    (lambda inits: inits["W_scale"].__setitem__(0, 0.0), "W_scale holds 0.0; scales must be finite and > 0"),
    (lambda inits: inits["R_scale"].__setitem__(0, np.nan), "R_scale holds nan"),
    (lambda inits: inits.__setitem__("W_zp", inits["W_zp"].astype(np.int8)),
     "W_zero_point must have W's type uint8"),
    (lambda inits: inits.__setitem__("R_scale", np.ones(3, np.float32)), r"R_scale has shape \(3,\)"),
    (lambda inits: inits.__setitem__("W_scale", inits["W_scale"].astype(np.float64)), "W_scale must be float32"),
    (lambda inits: inits.__setitem__("W_q", inits["W_q"].astype(np.int32)),
     "W must be a 3-D int8 or uint8 tensor"),
])
def test_malformed_quantized_node(edit, match):
    qmodel, _ = _hand_built(uint8_symmetric)
    inits = {t.name: numpy_helper.to_array(t).copy() for t in qmodel.graph.initializer}
    edit(inits)
    del qmodel.graph.initializer[:]
    qmodel.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in inits.items())
    with pytest.raises(ConversionError, match=match):
        converters.from_onnx(qmodel)


def test_missing_scale_input():
    qmodel, _ = _hand_built(uint8_symmetric)
    node = qmodel.graph.node[0]
    del node.input[10:]
    with pytest.raises(ConversionError, match=r"required input 10 \(R_scale\) of DynamicQuantizeLSTM is missing"):
        converters.from_onnx(qmodel)


# ------------------------------------------------------------------------------------------ CLI


def test_cli_convert_and_verify_quantized_onnx(bidirectional_2layer, tmp_path):
    _, model, _, _ = bidirectional_2layer
    src, dst = tmp_path / "q.onnx", tmp_path / "q.fastlstm"
    src.write_bytes(ort_quantize_dynamic(model.SerializeToString(), False))
    run = [sys.executable, "-m", "fastlstm.cli"]
    out = subprocess.run([*run, "convert", src, "-o", dst, "--verify"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "int8 weights" in out.stdout and "(tolerance 2e-05) ok" in out.stdout
    assert "DynamicQuantizeLSTM (which also quantizes x and h): max abs error" in out.stdout
    verify = fastlstm.load(dst).spec.verify
    assert verify["max_rel_error"] <= 2e-5 and 0 < verify["source_node"]["max_abs_error"] < 0.2
    info = subprocess.run([*run, "info", dst], capture_output=True, text=True, timeout=300).stdout
    assert "weights     int8" in info and "DynamicQuantizeLSTM" in info
    again = subprocess.run([*run, "convert", src, "-o", tmp_path / "x.fastlstm", "--weights", "fp16"],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and again.stderr.count("\n") == 1 and "already int8" in again.stderr
