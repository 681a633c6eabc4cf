"""Converter errors not covered by tests/test_onnx_import.py and tests/test_torch_import.py (issue #6):
files of the wrong kind, truncation at every cut, attributes of the wrong type, absurd sizes, and
malicious pickles that must never run (through gadgets that need no test module to import)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from onnx import AttributeProto, helper, numpy_helper
from onnx_models import make_lstm_model
from payloads import live_payload
from specs import random_spec

import converters
import fastlstm
from fastlstm import ConversionError, FastLSTMError

torch = pytest.importorskip("torch")



@pytest.fixture()
def onnx_bytes():
    return converters.to_onnx(random_spec(3, 4)).SerializeToString()


def test_onnx_converter_refuses_other_kinds_of_file(tmp_path):
    sd = tmp_path / "w.pt"
    torch.save(torch.nn.LSTM(3, 4).state_dict(), sd)
    packed = tmp_path / "m.fastlstm"
    fastlstm.save(random_spec(3, 4), packed)
    for path in (sd, packed):
        with pytest.raises(ConversionError, match="not a valid ONNX|no graph|no LSTM node"):
            converters.from_onnx(path)


def test_onnx_truncated_at_every_cut(onnx_bytes):
    """A cut anywhere is a ConversionError (protobuf cut at a field boundary parses: the importer
    must still notice what is missing)."""
    for cut in range(1, len(onnx_bytes), max(1, len(onnx_bytes) // 97)):
        with pytest.raises(ConversionError):
            converters.from_onnx(onnx_bytes[:cut])


def _lstm_node(model):
    return next(n for n in model.graph.node if n.op_type == "LSTM")


def _set_attr(model, name, value=None, attr=None):
    node = _lstm_node(model)
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept + [attr or helper.make_attribute(name, value)])
    return model


@pytest.mark.parametrize("name,value,match", [
    ("hidden_size", 4.0, "'hidden_size' must be of type INT, found FLOAT"),
    ("hidden_size", b"4", "'hidden_size' must be of type INT, found STRING"),
    ("hidden_size", [4], "'hidden_size' must be of type INT, found INTS"),
    ("direction", 1, "'direction' must be of type STRING, found INT"),
    ("activations", b"Sigmoid", "'activations' must be of type STRINGS, found STRING"),
    ("clip", "3", "'clip' must be of type FLOAT, found STRING"),
    ("layout", 2, "layout must be 0 or 1, found 2"),
    ("direction", b"\xff\xfeforward", "unknown direction"),
    ("activations", [b"Sigmoid", b"\xff", b"Tanh"], "unknown activation"),
    ("hidden_size", -4, "hidden_size must be positive|has shape"),
    ("hidden_size", 2**40, "has shape"),
])
def test_onnx_attribute_of_wrong_type_or_value(name, value, match):
    model, _ = make_lstm_model(3, 4)
    with pytest.raises(ConversionError, match=match):
        converters.from_onnx(_set_attr(model, name, value))


def test_onnx_reference_attribute():
    """A function-body reference attribute has no value here: a ConversionError, not onnx's ValueError."""
    model, _ = make_lstm_model(3, 4)
    _set_attr(model, "clip", attr=AttributeProto(name="clip", type=AttributeProto.FLOAT, ref_attr_name="c"))
    with pytest.raises(ConversionError, match="cannot read attribute 'clip'"):
        converters.from_onnx(model)


def test_onnx_lying_initializer_dims(onnx_bytes):
    import onnx

    model = onnx.ModelProto()
    model.ParseFromString(onnx_bytes)
    init = model.graph.initializer[0]
    del init.dims[:]
    init.dims.extend([10**6, 10**6, 3])
    with pytest.raises(ConversionError, match="cannot read tensor|has shape"):
        converters.from_onnx(model)


def test_onnx_huge_sparse_initializer_refused_before_allocating(onnx_bytes):
    import onnx

    model = onnx.ModelProto()
    model.ParseFromString(onnx_bytes)
    values = numpy_helper.from_array(np.ones(1, np.float32), "big")
    indices = numpy_helper.from_array(np.zeros(1, np.int64), "big_idx")
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [100000, 100000]))
    with pytest.raises(ConversionError, match="sparse initializer 'big'.*exceed"):
        converters.from_onnx(model)
    del model.graph.sparse_initializer[:]
    indices = numpy_helper.from_array(np.array([10**9], np.int64), "bad_idx")
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [4, 4]))
    with pytest.raises(ConversionError, match="sparse initializer 'big' is malformed"):
        converters.from_onnx(model)


def test_onnx_corrupt_names_are_not_a_crash(onnx_bytes):
    """protobuf hands back bytes for a string field holding invalid UTF-8."""
    import onnx

    model = onnx.ModelProto()
    model.ParseFromString(onnx_bytes)
    for node in model.graph.node:
        node.op_type = "Relu"
    data = model.SerializeToString().replace(b"Relu", b"R\xfflu")
    with pytest.raises(ConversionError, match="no LSTM node"):
        converters.from_onnx(data)


# ---------------------------------------------------------------------------- malicious pickles


@pytest.mark.parametrize("how", ["zip", "legacy", "raw_pickle", "nested"])
def test_malicious_pt_is_refused_and_never_executed(tmp_path, how):
    payload, marker = live_payload(tmp_path)  # checked live under plain pickle

    path = tmp_path / "evil.pt"
    if how == "zip":
        torch.save(payload, path)
    elif how == "legacy":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    elif how == "raw_pickle":
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save({"weight_ih_l0": torch.zeros(16, 3), "extra": payload}, path)
    with pytest.raises(ConversionError) as info:
        converters.from_torch(path)
    assert "\n" not in str(info.value)
    assert not marker.exists(), "from_torch executed pickled code"


@pytest.mark.parametrize("obj,match", [
    ([torch.zeros(16, 3)], "expected a state_dict"),
    ({"weight_ih_l0": 3, "weight_hh_l0": "x"}, "expected a tensor or array"),
    ({"epoch": 3, "name": "x"}, "no LSTM tensors"),
])
def test_pt_holding_other_than_tensors(tmp_path, obj, match):
    path = tmp_path / "w.pt"
    torch.save(obj, path)
    with pytest.raises(ConversionError, match=match):
        converters.from_torch(path)


def test_errors_are_fastlstm_errors():
    for cls in (fastlstm.FormatError, fastlstm.ConversionError, fastlstm.InputError, fastlstm.SpecError,
                fastlstm.VerificationError):
        assert issubclass(cls, FastLSTMError)


@pytest.mark.parametrize("location", ["../secret.bin", "ABSOLUTE"])
def test_onnx_external_data_cannot_escape_the_model_directory(tmp_path, location):
    """An ONNX tensor whose external data points outside the model's folder is refused, not read."""
    import onnx

    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"s" * 4096)
    (tmp_path / "sub").mkdir()
    model = converters.to_onnx(random_spec(3, 4))
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", str(secret) if location == "ABSOLUTE" else location
    path = tmp_path / "sub" / "m.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ConversionError, match="external data"):
        converters.from_onnx(path)


# ------------------------------------------------------------------- bounded constant folding
# Weights computed by ops are folded with onnx.reference; ops that size their output from input values must
# be refused before they allocate (converters/onnx_fold.py, MAX_FOLD_BYTES and friends).

_I, _H = 3, 4


def _i64(name, values):
    return numpy_helper.from_array(np.array(values, np.int64), name)


def _lstm_fed_by(nodes, initializers=(), *, w="W", r="R", b="B", opset=17):
    """A one-LSTM model (I=3, H=4) whose W / R / B are the named values; W, R, B initializers exist too."""
    from onnx import TensorProto

    rng = np.random.default_rng(0)
    base = {"W": rng.standard_normal((1, 4 * _H, _I)), "R": rng.standard_normal((1, 4 * _H, _H)),
            "B": rng.standard_normal((1, 8 * _H))}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in base.items()] + list(initializers)
    lstm = helper.make_node("LSTM", ["X", w, r, b], ["Y"], hidden_size=_H, name="lstm")
    graph = helper.make_graph(
        list(nodes) + [lstm], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [5, 1, _I])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _refused_fast(model, match, seconds=1.0, max_bytes=16 << 20):
    """from_onnx raises ConversionError matching `match` within `seconds`, peaking below `max_bytes`."""
    import time
    import tracemalloc

    from onnx.reference import ReferenceEvaluator  # noqa: F401  (imported once, outside the timing)

    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ConversionError, match=match) as info:
            converters.from_onnx(model)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < seconds, f"took {elapsed:.2f} s"
    assert peak < max_bytes, f"allocated {peak} bytes"
    assert "\n" not in str(info.value)
    return info.value


def test_fold_refuses_huge_constant_of_shape():
    model = _lstm_fed_by([helper.make_node("ConstantOfShape", ["shape"], ["big"], name="cos")],
                         [_i64("shape", [100000, 100000])], b="big")
    _refused_fast(model, r"input B to constants: ConstantOfShape node 'cos' output 'big' would hold 10000000000 "
                         r"elements \(40000000000 bytes\).*MAX_FOLD_BYTES")


def test_fold_refuses_huge_expand():
    model = _lstm_fed_by([helper.make_node("Expand", ["W", "shape"], ["big"], name="exp")],
                         [_i64("shape", [100000, 100000, 4 * _H, _I])], w="big")
    _refused_fast(model, r"input W to constants: Expand node 'exp' output 'big' would hold 480000000000 elements")


def test_fold_refuses_huge_tile():
    model = _lstm_fed_by([helper.make_node("Tile", ["R", "reps"], ["big"], name="tile")],
                         [_i64("reps", [1, 100000, 100000])], r="big")
    _refused_fast(model, r"input R to constants: Tile node 'tile' output 'big' would hold 640000000000 elements")


@pytest.mark.parametrize("op,inputs,attrs,inits", [
    ("Range", ["s", "l", "d"], {}, [_i64("s", 0), _i64("l", 2**40), _i64("d", 1)]),
    ("Range", ["s", "l", "d"], {}, [numpy_helper.from_array(np.array(v, np.float32), n)
                                    for n, v in (("s", 0.0), ("l", np.inf), ("d", 1.0))]),
    ("Pad", ["B", "pads"], {}, [_i64("pads", [0, 0, 10**6, 10**9])]),
    ("OneHot", ["B", "depth", "vals"], {}, [_i64("depth", 10**9),
                                            numpy_helper.from_array(np.array([0, 1], np.float32), "vals")]),
    ("Resize", ["B", "", "scales"], {}, [numpy_helper.from_array(np.array([1e5, 1e5], np.float32), "scales")]),
    ("Resize", ["B", "", "", "sizes"], {}, [_i64("sizes", [10**6, 10**6])]),
    ("Gather", ["row", "idx"], {}, [numpy_helper.from_array(np.zeros((1, 10**5), np.float32), "row"),
                                   numpy_helper.from_array(np.zeros(10**4, np.int64), "idx")]),
    ("Add", ["col", "row"], {}, [numpy_helper.from_array(np.zeros((10**5, 1), np.float32), "col"),
                                 numpy_helper.from_array(np.zeros((1, 10**5), np.float32), "row")]),
    ("MatMul", ["col", "row"], {}, [numpy_helper.from_array(np.zeros((10**5, 1), np.float32), "col"),
                                    numpy_helper.from_array(np.zeros((1, 10**5), np.float32), "row")]),
    ("RandomUniform", [], {"shape": [10**5, 10**5]}, []),
])
def test_fold_refuses_other_value_sized_ops(op, inputs, attrs, inits):
    model = _lstm_fed_by([helper.make_node(op, inputs, ["big"], name="n", **attrs)], inits, b="big")
    _refused_fast(model, rf"{op} node 'n' output 'big' would hold (~?[0-9.e]+|unbounded) elements")


def test_fold_caps_computed_values_not_constants(monkeypatch):
    """A Constant node holds its value in the file (like an initializer): not capped. What is computed from it
    is, after the op ran for ops without a size rule (Identity here)."""
    from converters import onnx_fold

    monkeypatch.setattr(onnx_fold, "MAX_FOLD_BYTES", 64)  # B is (1, 32) float32: 128 bytes
    bias = numpy_helper.from_array(np.ones((1, 8 * _H), np.float32))
    constant = helper.make_node("Constant", [], ["b_const"], value=bias, name="const")
    spec = converters.from_onnx(_lstm_fed_by([constant], b="b_const"))
    assert np.all(spec.layers[0][0].b == 2.0)
    copy = helper.make_node("Identity", ["b_const"], ["b_copy"], name="copy")
    _refused_fast(_lstm_fed_by([constant, copy], b="b_copy"),
                  r"input B to constants: Identity node 'copy' output 'b_copy' holds 128 bytes of shape \(1, 32\)")


def test_fold_refuses_a_doubling_chain(monkeypatch):
    """A chain of 30 Concats doubling a value stops at the limit (lowered here so the test allocates little)
    at the node that would cross it, before that node runs."""
    from converters import onnx_fold

    monkeypatch.setattr(onnx_fold, "MAX_FOLD_BYTES", 1 << 16)
    nodes = [helper.make_node("Concat", [f"v{k}", f"v{k}"], [f"v{k + 1}"], axis=0, name=f"cat{k}")
             for k in range(30)]
    model = _lstm_fed_by(nodes, [numpy_helper.from_array(np.ones(1, np.float32), "v0")], b="v30")
    _refused_fast(model, r"Concat node 'cat14' output 'v15' would hold 32768 elements \(131072 bytes\)")


def test_fold_bounds_loop_and_if_bodies(monkeypatch):
    """Subgraphs are checked node by node too: a huge ConstantOfShape inside an If branch, a Loop body
    doubling its carried value, and a Loop that never ends."""
    from onnx import TensorProto

    from converters import onnx_fold

    def branch(name, nodes, out):
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)])

    huge = branch("then", [helper.make_node("ConstantOfShape", ["shape"], ["z"], name="inner_cos")], "z")
    small = branch("else", [helper.make_node("Identity", ["B"], ["b2"])], "b2")
    model = _lstm_fed_by([helper.make_node("If", ["cond"], ["big"], then_branch=huge, else_branch=small)],
                         [_i64("shape", [10**6, 10**6]), numpy_helper.from_array(np.array(True), "cond")], b="big")
    _refused_fast(model, r"ConstantOfShape node 'inner_cos' output 'z' would hold 1000000000000 elements")

    def loop_body(nodes, carried_out):
        return helper.make_graph(
            nodes, "body",
            [helper.make_tensor_value_info("i", TensorProto.INT64, []),
             helper.make_tensor_value_info("c", TensorProto.BOOL, []),
             helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
            [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info(carried_out, TensorProto.FLOAT, None)],
        )

    monkeypatch.setattr(onnx_fold, "MAX_FOLD_BYTES", 1 << 16)
    doubling = loop_body([helper.make_node("Identity", ["c"], ["c_out"]),
                          helper.make_node("Concat", ["x", "x"], ["x2"], axis=0, name="twice")], "x2")
    model = _lstm_fed_by([helper.make_node("Loop", ["M", "cond", "B"], ["big"], body=doubling)],
                         [_i64("M", 60), numpy_helper.from_array(np.array(True), "cond")], b="big")
    _refused_fast(model, r"Concat node 'twice' output 'x2' would hold 32768 elements")

    monkeypatch.setattr(onnx_fold, "MAX_FOLD_RUNS", 2000)
    endless = loop_body([helper.make_node("Identity", ["c"], ["c_out"]), helper.make_node("Identity", ["x"], ["y"])],
                        "y")
    model = _lstm_fed_by([helper.make_node("Loop", ["", "cond", "B"], ["big"], body=endless)],
                         [numpy_helper.from_array(np.array(True), "cond")], b="big")
    _refused_fast(model, r"more than 2000 node and subgraph executions \(MAX_FOLD_RUNS\).*Loop that does not end")


def test_fold_of_legitimate_computed_weights_matches():
    """W from Concat + Reshape + Transpose of initializers, R from Slice, B = ConstantOfShape zeros inside an
    If branch: converts, and equals the model holding the same weights as plain initializers."""
    from onnx import TensorProto

    rng = np.random.default_rng(7)
    W = rng.standard_normal((1, 4 * _H, _I)).astype(np.float32)
    R_big = rng.standard_normal((1, 4 * _H, 2 * _H)).astype(np.float32)
    halves = W.transpose(0, 2, 1).reshape(-1)  # stored as W^T flattened, in two halves
    zeros = helper.make_node("ConstantOfShape", ["b_shape"], ["b0"],
                             value=numpy_helper.from_array(np.zeros(1, np.float32)))
    branch = helper.make_graph([zeros], "then", [], [helper.make_tensor_value_info("b0", TensorProto.FLOAT, None)])
    nodes = [
        helper.make_node("Concat", ["w_a", "w_b"], ["w_flat"], axis=0),
        helper.make_node("Reshape", ["w_flat", "w_shape"], ["w_t"]),
        helper.make_node("Transpose", ["w_t"], ["w"], perm=[0, 2, 1]),
        helper.make_node("Slice", ["r_big", "starts", "ends", "axes"], ["r"]),
        helper.make_node("If", ["cond"], ["b"], then_branch=branch, else_branch=branch),
    ]
    inits = [
        numpy_helper.from_array(halves[: halves.size // 2], "w_a"),
        numpy_helper.from_array(halves[halves.size // 2:], "w_b"),
        _i64("w_shape", [1, _I, 4 * _H]), numpy_helper.from_array(R_big, "r_big"),
        _i64("starts", [0]), _i64("ends", [_H]), _i64("axes", [2]), _i64("b_shape", [1, 8 * _H]),
        numpy_helper.from_array(np.array(True), "cond"),
    ]
    folded = converters.from_onnx(_lstm_fed_by(nodes, inits, w="w", r="r", b="b"))
    plain = _lstm_fed_by([], [numpy_helper.from_array(W, "W2"), numpy_helper.from_array(R_big[:, :, :_H], "R2"),
                              numpy_helper.from_array(np.zeros((1, 8 * _H), np.float32), "B2")],
                         w="W2", r="R2", b="B2")
    expected = converters.from_onnx(plain)
    for got, want in zip(folded.layers[0], expected.layers[0], strict=True):
        np.testing.assert_array_equal(got.W, want.W)
        np.testing.assert_array_equal(got.R, want.R)
        np.testing.assert_array_equal(got.b, want.b)
    assert not np.any(folded.layers[0][0].b)
