"""from_onnx / to_onnx against ONNX Runtime, through the float64 NumPy reference.

Every check runs the converted spec in tests/reference.py and compares with ORT running the original
ONNX graph: max |ours - ORT| / max(max |ORT|, 1) <= 2e-5 on Y, Y_h and Y_c.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_models import (
    extract_lstm,
    lstm_weights,
    make_lstm_model,
    onnx_y_to_time_major,
    ort_run,
)
from reference import reference_run
from specs import random_spec, rel_error

from converters import from_onnx, to_onnx
from fastlstm import CellOptions, ConversionError

TOL = 2e-5
I, H = 3, 4
WORST: dict[str, float] = {}  # label -> worst relative error seen (printed with FASTLSTM_REPORT=1)


def _record(label, err):
    WORST[label] = max(WORST.get(label, 0.0), err)
    assert err <= TOL, f"{label}: relative error {err:.3g} > {TOL}"


if os.environ.get("FASTLSTM_REPORT"):
    import atexit

    atexit.register(lambda: print("\nworst relative errors:", {k: f"{v:.2e}" for k, v in WORST.items()}))


def check_node(model, *, T=5, B=3, seq_lens=None, layout=0, seed=1, label="node", oracle=None):
    """Convert the one-LSTM-node `model`; compare reference_run(spec) with ORT on the model
    (or on `oracle`, an equivalent layout-0 model, when ORT cannot run the original)."""
    spec = from_onnx(model)
    D, Hh = spec.num_directions, spec.hidden_size
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, spec.input_size)).astype(np.float32)
    h0 = rng.standard_normal((D, B, Hh)).astype(np.float32)
    c0 = rng.standard_normal((D, B, Hh)).astype(np.float32)
    if layout == 1 and oracle is None:
        out = ort_run(model, x.transpose(1, 0, 2), h0.transpose(1, 0, 2), c0.transpose(1, 0, 2), seq_lens)
        out["Y_h"], out["Y_c"] = out["Y_h"].transpose(1, 0, 2), out["Y_c"].transpose(1, 0, 2)
    else:
        out = ort_run(oracle or model, x, h0, c0, seq_lens)
        layout = 0
    y, hT, cT = reference_run(spec, x, h0[None], c0[None], seq_lens)
    _record(label, rel_error(y, onnx_y_to_time_major(out["Y"], layout)))
    _record(label, rel_error(hT[0], out["Y_h"]))
    _record(label, rel_error(cT[0], out["Y_c"]))
    return spec


# ------------------------------------------------------------------------------ cell options

DIRECTIONS = ["forward", "reverse", "bidirectional"]
OPTION_CASES = {
    "default": {},
    "no_bias": {"bias": False},
    "peephole": {"peephole": True},
    "clip": {"clip": 0.4, "scale": 1.5},
    "clip_peephole": {"clip": 0.3, "peephole": True, "scale": 1.5},
    "input_forget": {"input_forget": 1},
    "input_forget_peephole_clip": {"input_forget": 1, "peephole": True, "clip": 0.7},
    "no_state_inputs": {"state_inputs": False},
}


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_options_match_ort(direction, case):
    kwargs = dict(OPTION_CASES[case])
    model, _ = make_lstm_model(I, H, direction=direction, **kwargs)
    if not kwargs.get("state_inputs", True):
        spec = from_onnx(model)
        x = np.random.default_rng(0).standard_normal((5, 2, I)).astype(np.float32)
        out = ort_run(model, x)
        y, hT, cT = reference_run(spec, x)
        _record(case, rel_error(y, onnx_y_to_time_major(out["Y"])))
        _record(case, rel_error(hT[0], out["Y_h"]))
        return
    spec = check_node(model, label=case)
    assert [ds.reverse for ds in spec.layers[0]] == (
        [False, True] if direction == "bidirectional" else [direction == "reverse"]
    )
    assert spec.layers[0][0].options.input_forget == bool(kwargs.get("input_forget"))


def test_hidden_size_inferred_from_weights():
    """hidden_size is optional in ONNX (ORT insists on it): infer it from R, check on the twin."""
    model, arrays = make_lstm_model(I, H, direction="bidirectional", hidden_size_attr=False)
    twin, _ = make_lstm_model(I, H, direction="bidirectional", arrays=arrays)
    assert check_node(model, oracle=twin, label="default").hidden_size == H


ALL_ACTIVATIONS = ["Sigmoid", "Tanh", "Relu", "Affine", "LeakyRelu", "ThresholdedRelu", "ScaledTanh",
                   "HardSigmoid", "Elu", "Softsign", "Softplus"]
PARAMS = {  # explicit (alpha, beta) for the activations that take them
    "Affine": (0.6, 0.1), "LeakyRelu": (0.2, None), "ThresholdedRelu": (0.15, None),
    "ScaledTanh": (1.3, 0.7), "HardSigmoid": (0.3, 0.45), "Elu": (0.8, None),
}


def _packed(acts):
    alphas = [PARAMS[a][0] for a in acts if a in PARAMS]
    betas = [PARAMS[a][1] for a in acts if a in PARAMS and PARAMS[a][1] is not None]
    return alphas or None, betas or None


@pytest.mark.parametrize("slot", [0, 1, 2], ids=["f", "g", "h"])
@pytest.mark.parametrize("act", ALL_ACTIVATIONS)
@pytest.mark.parametrize("params", ["explicit", "default"])
def test_activations_match_ort(act, slot, params):
    acts = ["Sigmoid", "Tanh", "Tanh"]
    acts[slot] = act
    # bidirectional: the reverse direction gets a different set, so the flat alpha/beta lists must be
    # split between directions exactly as ORT consumes them
    back = ["HardSigmoid", "ScaledTanh", "Elu"]
    alphas, betas = _packed(acts + back) if params == "explicit" else (None, None)
    # unbounded gate activations make c grow geometrically; keep sequences short there
    T = 3 if slot == 0 and act in ("Relu", "Affine", "LeakyRelu", "ThresholdedRelu", "Elu", "Softplus") else 6
    model, _ = make_lstm_model(I, H, direction="bidirectional", activations=acts + back, alphas=alphas,
                               betas=betas, scale=0.8)
    spec = check_node(model, T=T, label="activations")
    assert spec.layers[0][0].options.activations == tuple(acts)


def test_activation_defaults_match_ort():
    """ORT's defaults when activation_alpha/beta run out: Affine (0, 0), ThresholdedRelu 0,
    ScaledTanh (0, 0) (not the stand-alone operators' 1.0), LeakyRelu 0.01, HardSigmoid (0.2, 0.5),
    Elu 1.0."""
    expected = {"Affine": (0.0, 0.0), "ThresholdedRelu": (0.0, 0.0), "ScaledTanh": (0.0, 0.0),
                "LeakyRelu": (0.01, 0.0), "HardSigmoid": (0.2, 0.5), "Elu": (1.0, 0.0)}
    for act, (alpha, beta) in expected.items():
        model, _ = make_lstm_model(I, H, activations=["Sigmoid", "Tanh", act])
        opts = check_node(model, label="activations").layers[0][0].options
        assert (opts.alphas[2], opts.betas[2]) == pytest.approx((alpha, beta)), act


def test_alpha_beta_partial_extra_and_case():
    # one alpha for two activations that take one: the first gets it, the second its default
    model, _ = make_lstm_model(I, H, activations=["sigmoid", "LEAKYRELU", "elu"], alphas=[0.3])
    opts = check_node(model, label="activations").layers[0][0].options
    assert opts.activations == ("Sigmoid", "LeakyRelu", "Elu")
    assert opts.alphas == pytest.approx((0.0, 0.3, 1.0))
    # ORT ignores extra values; so does the importer
    model, _ = make_lstm_model(I, H, activations=["Sigmoid", "LeakyRelu", "Tanh"], alphas=[0.3, 9, 9],
                               betas=[5.0])
    assert check_node(model, label="activations").layers[0][0].options.alphas == pytest.approx((0, 0.3, 0))


# ----------------------------------------------------------------------- sequence_lens, layout

@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("lens", [[5, 2, 3], [1, 5, 4], [5, 0, 3], [0, 0, 0]])
def test_sequence_lens_match_ort(direction, lens):
    model, _ = make_lstm_model(I, H, direction=direction, seq_lens_input=True, peephole=True)
    check_node(model, seq_lens=np.array(lens, np.int32), label="sequence_lens")


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_layout_1(direction):
    """ORT refuses layout=1 ("Batchwise recurrent operations ... not supported"): compare with the
    same weights in a layout-0 twin, and record the layout in spec.source."""
    model, arrays = make_lstm_model(I, H, direction=direction, layout=1, opset=14, peephole=True)
    twin, _ = make_lstm_model(I, H, direction=direction, opset=14, peephole=True, arrays=arrays)
    spec = check_node(model, oracle=twin, label="layout")
    assert spec.source["layout"] == 1
    assert from_onnx(twin).source["layout"] == 0


# ----------------------------------------------------------------------- opsets, weight storage

@pytest.mark.parametrize("opset", [7, 9, 14, 22])
@pytest.mark.parametrize("weights", ["initializer", "constant", "computed"])
def test_opsets_and_weight_storage(opset, weights):
    model, _ = make_lstm_model(I, H, direction="bidirectional", opset=opset, weights=weights, peephole=True,
                               clip=1.5, activations=["HardSigmoid", "Tanh", "Softsign"] * 2,
                               alphas=[0.25, 0.3], betas=[0.4, 0.5], seq_lens_input=True)
    if weights == "computed":
        assert {n.op_type for n in model.graph.node} >= {"Slice", "Transpose", "Cast", "Unsqueeze", "Concat"}
    spec = check_node(model, seq_lens=np.array([4, 5, 1], np.int32), label="opsets/storage")
    assert spec.source["opset"] == opset and spec.source["format"] == "onnx"
    assert spec.source["node"] == ["lstm"] and spec.source["producer"] == "fastlstm-tests"


def test_constant_attribute_kinds():
    """W from value_floats + Reshape, B from value_float via Expand, R through Gather/Split."""
    arrays = lstm_weights(I, H, seed=3)
    nodes = [
        helper.make_node("Constant", [], ["w_flat"], value_floats=arrays["W"].ravel().tolist()),
        helper.make_node("Constant", [], ["w_shape"], value_ints=[1, 4 * H, I]),
        helper.make_node("Reshape", ["w_flat", "w_shape"], ["W"]),
        helper.make_node("Constant", [], ["b_val"], value_float=0.25),
        helper.make_node("Constant", [], ["b_shape"], value_ints=[1, 8 * H]),
        helper.make_node("Expand", ["b_val", "b_shape"], ["B"]),
        helper.make_node("Constant", [], ["r_pair"], value=numpy_helper.from_array(
            np.stack([arrays["R"][0], -arrays["R"][0]]))),  # (2, 4H, H)
        helper.make_node("Constant", [], ["zero"], value_int=0),
        helper.make_node("Gather", ["r_pair", "zero"], ["r0"], axis=0),
        helper.make_node("Constant", [], ["split"], value_ints=[2 * H, 2 * H]),
        helper.make_node("Split", ["r0", "split"], ["r_a", "r_b"], axis=0),
        helper.make_node("Concat", ["r_a", "r_b"], ["r_cat"], axis=0),
        helper.make_node("Constant", [], ["axes0"], value_ints=[0]),
        helper.make_node("Unsqueeze", ["r_cat", "axes0"], ["R"]),
        helper.make_node("LSTM", ["X", "W", "R", "B", "", "h0", "c0"], ["Y", "Y_h", "Y_c"], hidden_size=H),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("X", "h0", "c0")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Y", "Y_h", "Y_c")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    spec = from_onnx(model)
    ref, _ = make_lstm_model(I, H, arrays={**arrays, "B": np.full((1, 8 * H), 0.25, np.float32)})
    ref_spec = from_onnx(ref)
    for a, b in zip(spec.layers[0], ref_spec.layers[0], strict=True):
        np.testing.assert_array_equal(a.W, b.W)
        np.testing.assert_array_equal(a.R, b.R)
        np.testing.assert_array_equal(a.b, b.b)


def test_gate_reorder_and_bias_sum_exact():
    """Canonical i, f, g, o from ONNX i, o, f, c; b = Wb + Rb; peephole rows p_i, p_f, p_o."""
    model, arrays = make_lstm_model(I, H, peephole=True, seed=5)
    ds = from_onnx(model).layers[0][0]
    W, R, B, P = arrays["W"][0], arrays["R"][0], arrays["B"][0], arrays["P"][0]
    blk = {name: slice(k * H, (k + 1) * H) for k, name in enumerate("iofc")}
    for k, gate in enumerate("ifco"):
        np.testing.assert_array_equal(ds.W[k * H:(k + 1) * H], W[blk[gate]])
        np.testing.assert_array_equal(ds.R[k * H:(k + 1) * H], R[blk[gate]])
        np.testing.assert_allclose(ds.b[k * H:(k + 1) * H], B[blk[gate]] + B[4 * H:][blk[gate]], rtol=1e-6)
    np.testing.assert_array_equal(ds.peephole, P.reshape(3, H)[[0, 2, 1]])


def test_external_data(tmp_path):
    model, _ = make_lstm_model(I, 16, seed=2)
    expected = from_onnx(model).layers[0][0].W
    path = tmp_path / "ext.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").exists()
    spec = from_onnx(path)
    np.testing.assert_array_equal(spec.layers[0][0].W, expected)
    check_node(onnx.load(str(path)), label="external data")
    lazy = onnx.load(str(path), load_external_data=False)
    with pytest.raises(ConversionError, match="external"):
        from_onnx(lazy)


def test_sources_path_bytes_proto(tmp_path):
    model, _ = make_lstm_model(I, H)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    a, b, c = from_onnx(str(path)), from_onnx(path.read_bytes()), from_onnx(model)
    for other in (b, c):
        np.testing.assert_array_equal(a.layers[0][0].R, other.layers[0][0].R)


def test_unnamed_nodes_get_stable_names():
    m1, _ = make_lstm_model(I, H, node_name="", seed=1)
    m2, _ = make_lstm_model(I, H, node_name="", seed=2)
    # two parallel unnamed LSTMs on the same X: not a chain
    graph = m1.graph
    second = m2.graph.node[-1]
    for t in m2.graph.initializer:
        t.name = "m2_" + t.name
        graph.initializer.append(t)
    node = helper.make_node("LSTM", ["X", *["m2_" + n for n in second.input[1:4]]], ["Y2", "Yh2", "Yc2"],
                            hidden_size=H)
    graph.node.append(node)
    with pytest.raises(ConversionError, match=r"'LSTM_0', 'LSTM_1'"):
        from_onnx(m1)
    assert from_onnx(m1, node="LSTM_1").source["node"] == ["LSTM_1"]
    np.testing.assert_array_equal(from_onnx(m1, node="LSTM_0").layers[0][0].W,
                                  from_onnx(make_lstm_model(I, H, seed=1)[0]).layers[0][0].W)


# --------------------------------------------------------------------------------- chains

def _torch_export(num_layers, bidirectional, batch_first, seed=0):
    torch = pytest.importorskip("torch")
    torch.manual_seed(seed)
    m = torch.nn.LSTM(I, 5, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first)
    x = torch.randn(2, 6, I) if batch_first else torch.randn(6, 2, I)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the classic (TorchScript) exporter; tests/test_torch_onnx_export.py covers both exporters
        torch.onnx.export(m.eval(), (x,), buf, dynamo=False, opset_version=17)
    return buf.getvalue(), x.numpy()


@pytest.mark.parametrize("num_layers,bidirectional,batch_first",
                         [(1, False, False), (3, False, False), (2, True, False), (2, True, True),
                          (2, False, True)])
def test_torch_export_chain(num_layers, bidirectional, batch_first):
    data, x = _torch_export(num_layers, bidirectional, batch_first)
    spec = from_onnx(data)
    assert spec.num_layers == num_layers and spec.num_directions == 1 + bidirectional
    assert len(spec.source["node"]) == num_layers
    assert spec.source["batch_first"] is batch_first
    out = list(ort_run(data, x).values())
    xs = x.transpose(1, 0, 2) if batch_first else x
    y, hT, cT = reference_run(spec, xs)
    y_ort = out[0].transpose(1, 0, 2) if batch_first else out[0]
    L, D = spec.num_layers, spec.num_directions
    _record("torch chain", rel_error(y, y_ort))
    _record("torch chain", rel_error(hT.reshape(L * D, 2, -1), out[1]))
    _record("torch chain", rel_error(cT.reshape(L * D, 2, -1), out[2]))
    # a single layer of the chain can still be picked by name
    one = from_onnx(data, node=spec.source["node"][-1])
    assert one.num_layers == 1 and one.input_size == (I if num_layers == 1 else D * 5)


def test_chain_by_node_list_and_wrong_order():
    data, _ = _torch_export(3, False, False)
    names = from_onnx(data).source["node"]
    assert from_onnx(data, node=names[:2]).num_layers == 2
    with pytest.raises(ConversionError, match="do not form a layer chain"):
        from_onnx(data, node=[names[1], names[0]])
    with pytest.raises(ConversionError, match="do not form a layer chain"):
        from_onnx(data, node=[names[0], names[2]])


def test_chain_with_wrong_arrangement_is_not_a_chain():
    """A bidirectional Y reshaped to (T, B, 2H) without the Transpose mixes batch rows and directions:
    shape-compatible but not a layer stack, so it must not be merged."""
    spec = random_spec(I, H, num_layers=2, num_directions=2)
    model = to_onnx(spec)
    for node in list(model.graph.node):
        if node.op_type == "Transpose" and node.output[0].startswith("layer0"):
            for other in model.graph.node:
                other.input[:] = [node.input[0] if v == node.output[0] else v for v in other.input]
            model.graph.node.remove(node)
    with pytest.raises(ConversionError, match="do not form one layer chain"):
        from_onnx(model)
    with pytest.raises(ConversionError, match="not the layer input"):
        from_onnx(model, node=["layer0.lstm", "layer1.lstm"])


# ------------------------------------------------------------------------------------ Silero

SILERO_CASES = [
    ("silero_vad_16k_sequence.onnx", None),  # one top-level LSTM, initializer weights
    ("silero_vad_16k_op15.onnx", "/model/decoder/rnn/LSTM"),  # inside If, weights via Unsqueeze
    ("silero_vad_half.onnx", "/decoder/rnn_1/LSTM"),  # fp16 weights cast up inside If
    ("silero_vad.onnx", "If_0_else_branch__Inline_0__/decoder/rnn/LSTM"),
]


@pytest.mark.parametrize("filename,node", SILERO_CASES)
def test_silero_vad(filename, node):
    silero = pytest.importorskip("silero_vad")
    path = os.path.join(os.path.dirname(silero.__file__), "data", filename)
    if not os.path.exists(path):
        pytest.skip(f"{filename} not shipped by this silero-vad version")
    spec = from_onnx(path, node=node)
    assert (spec.input_size, spec.hidden_size, spec.num_layers) == (128, 128, 1)
    # ORT runs the node with the original weight-computing ops copied verbatim (no folding of ours)
    check_node(extract_lstm(onnx.load(path), spec.source["node"][0]), T=8, B=2, label="silero")
    oracle = extract_lstm(onnx.load(path), spec.source["node"][0])
    rng = np.random.default_rng(4)
    x = rng.standard_normal((8, 2, 128)).astype(np.float32)
    out = ort_run(oracle, x, np.zeros((1, 2, 128), np.float32), np.zeros((1, 2, 128), np.float32))
    y, hT, cT = reference_run(spec, x)
    _record("silero", rel_error(y, onnx_y_to_time_major(out["Y"])))
    _record("silero", rel_error(cT[0], out["Y_c"]))


def test_silero_several_lstms_listed():
    silero = pytest.importorskip("silero_vad")
    path = os.path.join(os.path.dirname(silero.__file__), "data", "silero_vad.onnx")
    with pytest.raises(ConversionError, match=r"4 LSTM nodes.*If_0_then_branch__Inline_0__/decoder/rnn/LSTM"):
        from_onnx(path)


# ------------------------------------------------------------------------------------- export

EXPORT_CASES = {
    "1L": dict(num_layers=1),
    "2L_reverse": dict(num_layers=2, reverse=True),
    "3L_bidir": dict(num_layers=3, num_directions=2),
    "2L_bidir_peephole": dict(num_layers=2, num_directions=2, peephole=True),
    "options": dict(num_layers=2, num_directions=2, peephole=True, options=CellOptions.make(
        ["HardSigmoid", "LeakyRelu", "ScaledTanh"], [0.25, 0.0625, 0.75], [0.5, 1.25], clip=2.5,
        input_forget=True)),
}


@pytest.mark.parametrize("opset", [7, 12, 17, 22])
@pytest.mark.parametrize("case", list(EXPORT_CASES))
def test_to_onnx_matches_ort_and_round_trips(case, opset):
    spec = random_spec(I, H, seed=7, **EXPORT_CASES[case])
    model = to_onnx(spec, opset=opset, with_state=True, with_sequence_lens=True)
    onnx.checker.check_model(model)
    assert model.ir_version == 8
    L, D = spec.num_layers, spec.num_directions
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 3, I)).astype(np.float32)
    h0 = rng.standard_normal((L, D, 3, H)).astype(np.float32)
    c0 = rng.standard_normal((L, D, 3, H)).astype(np.float32)
    lens = np.array([6, 2, 0], np.int32)
    out = ort_run(model, x, h0.reshape(L * D, 3, H), c0.reshape(L * D, 3, H), lens)
    y, hT, cT = reference_run(spec, x, h0, c0, lens)
    _record("to_onnx", rel_error(y, out["Y"]))
    _record("to_onnx", rel_error(hT.reshape(L * D, 3, H), out["Y_h"]))
    _record("to_onnx", rel_error(cT.reshape(L * D, 3, H), out["Y_c"]))

    back = from_onnx(model)
    assert (back.input_size, back.hidden_size, back.num_layers, back.num_directions, back.proj_size) == (
        spec.input_size, spec.hidden_size, spec.num_layers, spec.num_directions, spec.proj_size)
    for la, lb in zip(spec.layers, back.layers, strict=True):
        for a, b in zip(la, lb, strict=True):
            for name in ("W", "R", "b", "peephole"):
                va, vb = getattr(a, name), getattr(b, name)
                assert (va is None) == (vb is None)
                if va is not None:
                    np.testing.assert_array_equal(va, vb)
            assert a.reverse == b.reverse
            assert a.options == b.options  # alphas/clip chosen float32-exact above


def test_to_onnx_plain_inputs():
    spec = random_spec(I, H, num_layers=2)
    model = to_onnx(spec)
    assert [i.name for i in model.graph.input] == ["X"]
    assert [o.name for o in model.graph.output] == ["Y", "Y_h", "Y_c"]
    x = np.random.default_rng(0).standard_normal((4, 1, I)).astype(np.float32)
    assert rel_error(reference_run(spec, x)[0], ort_run(model, x)["Y"]) <= TOL


def test_to_onnx_rejects_what_onnx_cannot_express():
    with pytest.raises(ConversionError, match="proj_size"):
        to_onnx(random_spec(I, 6, proj_size=3))
    spec = random_spec(I, H, num_directions=2)
    spec.layers[0][1].options = CellOptions(clip=1.0)
    with pytest.raises(ConversionError, match="clip"):
        to_onnx(spec)
    with pytest.raises(ConversionError, match="opset"):
        to_onnx(random_spec(I, H), opset=6)


# ------------------------------------------------------------------------------------- errors

def _model_with(nodes, inputs=("X",), inits=(), opset=17):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in inputs],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _inits(arrays, D=1):
    return [numpy_helper.from_array(arrays[k], k) for k in ("W", "R", "B") if arrays.get(k) is not None]


def test_error_several_lstms_and_unknown_node():
    arrays = lstm_weights(I, H)
    nodes = [helper.make_node("LSTM", ["X", "W", "R", "B"], [f"Y{k}"], name=f"enc{k}", hidden_size=H)
             for k in range(2)]
    nodes.append(helper.make_node("Add", ["Y0", "Y1"], ["Y"]))
    model = _model_with(nodes, inits=_inits(arrays))
    with pytest.raises(ConversionError, match=r"2 LSTM nodes.*'enc0', 'enc1'.*") as info:
        from_onnx(model)
    assert "node=" in str(info.value)
    with pytest.raises(ConversionError, match=r"no LSTM node named 'dec'.*'enc0', 'enc1'"):
        from_onnx(model, node="dec")
    assert from_onnx(model, node="enc1").source["node"] == ["enc1"]


@pytest.mark.parametrize("how", ["graph_input", "computed_from_input"])
def test_error_non_constant_weights(how):
    arrays = lstm_weights(I, H)
    if how == "graph_input":
        model = _model_with([helper.make_node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=H)],
                            inputs=("X", "W"), inits=_inits({"R": arrays["R"]}))
        bad = "W"
    else:
        nodes = [helper.make_node("ReduceMean", ["X"], ["m"], keepdims=0),
                 helper.make_node("Add", ["R0", "m"], ["R"]),
                 helper.make_node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=H)]
        model = _model_with(nodes, inits=[numpy_helper.from_array(arrays["W"], "W"),
                                          numpy_helper.from_array(arrays["R"], "R0")])
        bad = "R"
    with pytest.raises(ConversionError, match=rf"input {bad} is not constant: depends on graph input '"):
        from_onnx(model)


@pytest.mark.parametrize("data,match", [
    (b"", "empty"),
    (b"\x00\x01\x02garbage\xff\xfe" * 50, "not a valid ONNX|no graph"),
    (np.random.default_rng(0).bytes(4096), "not a valid ONNX|no graph"),
    (b"hello world, definitely not onnx", "not a valid ONNX|no graph"),
])
def test_error_unreadable_bytes(data, match):
    with pytest.raises(ConversionError, match=match):
        from_onnx(data)


def test_error_files(tmp_path):
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ConversionError, match="empty"):
        from_onnx(empty)
    with pytest.raises(ConversionError, match="no such file"):
        from_onnx(tmp_path / "missing.onnx")
    with pytest.raises(ConversionError, match="directory"):
        from_onnx(tmp_path)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(os.urandom(2000))
    with pytest.raises(ConversionError):
        from_onnx(junk)
    with pytest.raises(ConversionError, match="expects a path"):
        from_onnx(12)


def test_error_no_lstm():
    model = _model_with([helper.make_node("Relu", ["X"], ["Y"])])
    with pytest.raises(ConversionError, match="no LSTM node.*found ops: Relu"):
        from_onnx(model)


def _bad_shape_model(**changes):
    arrays = lstm_weights(I, H, peephole=True)
    attrs = {"hidden_size": H}
    attrs.update(changes.pop("attrs", {}))
    arrays.update(changes)
    inits = [numpy_helper.from_array(v, k) for k, v in arrays.items()]
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "", "", "", "P"], ["Y"], **attrs)
    return _model_with([node], inits=inits)


@pytest.mark.parametrize("changes,match", [
    ({"attrs": {"hidden_size": 5}}, r"W has shape \(1, 16, 3\), expected \(1, 20, 3\)"),
    ({"R": np.zeros((1, 16, 5), np.float32)}, r"R has shape \(1, 16, 5\), expected \(1, 16, 4\)"),
    ({"B": np.zeros((1, 16), np.float32)}, r"B has shape \(1, 16\), expected \(1, 32\)"),
    ({"P": np.zeros((1, 8), np.float32)}, r"P has shape \(1, 8\), expected \(1, 12\)"),
    ({"attrs": {"direction": "bidirectional"}}, r"expected \(2, 16, 3\) for direction='bidirectional'"),
    ({"attrs": {"direction": "sideways"}}, "unknown direction 'sideways'"),
    ({"W": np.zeros((16, 3), np.float32)}, "W must be 3-D"),
    ({"W": np.zeros((1, 16, 3), np.int64)}, "floating point"),
    ({"attrs": {"activations": ["Sigmoid", "Tanh", "Swish"]}}, "unknown activation 'Swish'"),
    ({"attrs": {"activations": ["Sigmoid", "Tanh"]}}, "activations lists 2 functions, expected 3"),
    ({"attrs": {"clip": -1.0}}, "clip must be a positive number"),
])
def test_error_bad_shapes_and_attributes(changes, match):
    with pytest.raises(ConversionError, match=match):
        from_onnx(_bad_shape_model(**changes))


def test_error_missing_required_inputs():
    arrays = lstm_weights(I, H)
    model = _model_with([helper.make_node("LSTM", ["X", "", "R"], ["Y"], hidden_size=H)],
                        inits=_inits({"R": arrays["R"]}))
    with pytest.raises(ConversionError, match=r"required input W \(input weights\) is missing"):
        from_onnx(model)
    model = _model_with([helper.make_node("LSTM", ["X", "W"], ["Y"], hidden_size=H)],
                        inits=_inits({"W": arrays["W"]}))
    with pytest.raises(ConversionError, match=r"required input R .* is missing"):
        from_onnx(model)


def test_error_chain_with_different_hidden_sizes():
    first = random_spec(I, H, num_layers=1)
    model = to_onnx(first)
    # a second LSTM with H=6 on the first one's output
    arrays = lstm_weights(H, 6, seed=9)
    for k in ("W", "R", "B"):
        model.graph.initializer.append(numpy_helper.from_array(arrays[k], f"l1.{k}"))
    model.graph.node.append(helper.make_node("LSTM", ["Y", "l1.W", "l1.R", "l1.B"], ["Y2"], name="top",
                                             hidden_size=6))
    with pytest.raises(ConversionError, match="same hidden size"):
        from_onnx(model, node=["layer0.lstm", "top"])
    with pytest.raises(ConversionError, match="do not form one layer chain"):
        from_onnx(model)


def test_sparse_initializer_and_subgraph_scope():
    """R as a sparse initializer; the LSTM inside an If branch reading W from the outer graph."""
    arrays = lstm_weights(I, H, seed=6)
    R = arrays["R"].copy()
    R[np.abs(R) < 0.3] = 0.0
    flat = np.flatnonzero(R)
    sparse = helper.make_sparse_tensor(numpy_helper.from_array(R.reshape(-1)[flat], "R"),
                                       numpy_helper.from_array(flat.astype(np.int64), "R_idx"), R.shape)
    lstm = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Yb"], name="inner", hidden_size=H)
    branch = helper.make_graph([lstm], "branch", [], [helper.make_tensor_value_info("Yb", TensorProto.FLOAT,
                                                                                    None)])
    cond = helper.make_node("Constant", [], ["cond"], value=numpy_helper.from_array(np.array(True)))
    node_if = helper.make_node("If", ["cond"], ["Y"], then_branch=branch, else_branch=branch)
    graph = helper.make_graph(
        [cond, node_if], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(arrays[k], k) for k in ("W", "B")], sparse_initializer=[sparse])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ConversionError, match=r"2 LSTM nodes.*'inner', 'inner#1'"):
        from_onnx(model)
    spec = from_onnx(model, node="inner#1")
    twin, _ = make_lstm_model(I, H, arrays={**arrays, "R": R})
    np.testing.assert_array_equal(spec.layers[0][0].R, from_onnx(twin).layers[0][0].R)
    np.testing.assert_array_equal(spec.layers[0][0].W, from_onnx(twin).layers[0][0].W)
