"""Converter errors not covered by tests/test_onnx_import.py and tests/test_torch_import.py (issue #6):
files of the wrong kind, truncation at every cut, attributes of the wrong type, absurd sizes, and
malicious pickles that must never run (through gadgets that need no test module to import)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from onnx import AttributeProto, helper, numpy_helper
from onnx_models import make_lstm_model
from specs import random_spec

import converters
import fastlstm
from fastlstm import ConversionError, FastLSTMError

torch = pytest.importorskip("torch")


class OpenPayload:
    """Unpickling this creates `marker` with the builtin open(): no import of any test module needed."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


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
    marker = tmp_path / "payload_ran"
    payload = OpenPayload(str(marker))
    pickle.loads(pickle.dumps(payload)).close()  # control: the payload is live under plain pickle
    assert marker.exists()
    marker.unlink()

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
