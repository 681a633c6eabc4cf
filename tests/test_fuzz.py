"""Fuzz the two doors untrusted bytes come through: the packed loader and the ONNX converter.

Every input must give either a valid result (a spec whose Engine runs) or a FastLSTMError subclass;
any other exception is a bug. Mutations: bit flips, truncation, byte insertion/deletion/overwrite, and
structured edits of the packed header JSON (shape/offset/dtype lies, huge and negative numbers, wrong
version, non-dict JSON, lying header length) and of the ONNX protobuf (attribute values and types,
initializer dims and data types).

The default run takes a few seconds (CI). Long runs: FASTLSTM_FUZZ_EXAMPLES=100000 scales every test
to that many examples; see docs/errors.md (also `python -m tests.fuzz_long` for atheris).
"""

from __future__ import annotations

import json
import os
import re
import struct
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from onnx import TensorProto, helper
from onnx_models import make_lstm_model
from specs import random_spec

import converters
import fastlstm
from fastlstm import ConversionError, FormatError
from fastlstm.benchmarking.accuracy import ort_quantize_dynamic
from fastlstm.format import parse_spec

_LONG = int(os.environ.get("FASTLSTM_FUZZ_EXAMPLES", "0"))


def budget(examples: int):
    """CI: `examples` (a second or two each test); FASTLSTM_FUZZ_EXAMPLES overrides for long runs."""
    return settings(max_examples=_LONG or examples, deadline=None, derandomize=not _LONG,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much], database=None)


# ------------------------------------------------------------------------------------- seeds


def _packed_seed(weights: str = "fp32") -> bytes:
    """A small file exercising every optional tensor: 2 layers, bidirectional, peepholes, projection;
    W and R stored as `weights` (int8 adds the scale tensors)."""
    from fastlstm.quantize import quantize

    spec = random_spec(3, 4, num_layers=2, num_directions=2, proj_size=2, peephole=True, seed=5)
    spec = quantize(spec, weights)
    spec.source = {"format": "test"}
    spec.verify = {"runtime": "test", "max_abs_error": 0.0, "max_rel_error": 0.0}
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "seed.fastlstm")
        fastlstm.save(spec, path)
        with open(path, "rb") as f:
            return f.read()


PACKED = _packed_seed()
QUANTIZED_SEEDS = [_packed_seed(w) for w in ("int8", "fp16", "bf16")]  # format version 2, I8/F16/BF16 + scales


def _packed_layers_seed() -> bytes:
    """A whole model: every layer kind with tensors (embedding, Linear with and without bias, LayerNorm)."""
    from fastlstm.layers import Activation, Embedding, LayerNorm, Linear, SelectLast

    rng = np.random.default_rng(6)
    spec = random_spec(3, 4, num_layers=2, seed=6)
    spec.pre = [Embedding(rng.normal(size=(7, 3)))]
    spec.post = [SelectLast(4), LayerNorm(np.ones(4), np.zeros(4)), Linear(rng.normal(size=(5, 4)), None, "relu"),
                 Activation("tanh", 5), Linear(rng.normal(size=(3, 5)), np.zeros(3), "softmax")]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "seed.fastlstm")
        fastlstm.save(spec.validate(), path)
        with open(path, "rb") as f:
            return f.read()


PACKED_LAYERS = _packed_layers_seed()


def _whole_model_seed() -> bytes:
    """tf2onnx-style classifier: float ids -> Cast -> Gather -> Transpose -> LSTM -> Squeeze(Y_h) -> MatMul ->
    Add -> Softmax, plus a LayerNormalization and a Gemm: every importer path of onnx_graph."""
    from onnx import numpy_helper

    rng = np.random.default_rng(9)
    w, _ = make_lstm_model(3, 4, seed=3)
    inits = [t for t in w.graph.initializer] + [numpy_helper.from_array(a.astype(np.float32), n) for n, a in (
        ("emb", rng.normal(size=(6, 3))), ("fc_w", rng.normal(size=(4, 5))), ("fc_b", rng.normal(size=5)),
        ("ln_s", np.ones(5)), ("ln_b", np.zeros(5)), ("g_w", rng.normal(size=(2, 5))))]
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "ax0"))
    lstm = next(n for n in w.graph.node if n.op_type == "LSTM")
    nodes = [helper.make_node("Cast", ["ids"], ["ids_i"], to=TensorProto.INT64),
             helper.make_node("Gather", ["emb", "ids_i"], ["e"]),
             helper.make_node("Transpose", ["e"], ["X"], perm=[1, 0, 2]),
             helper.make_node("LSTM", list(lstm.input[:4]), ["Y", "Y_h"], hidden_size=4),
             helper.make_node("Squeeze", ["Y_h", "ax0"], ["h"]),
             helper.make_node("MatMul", ["h", "fc_w"], ["z"]), helper.make_node("Add", ["z", "fc_b"], ["z1"]),
             helper.make_node("LayerNormalization", ["z1", "ln_s", "ln_b"], ["z2"]),
             helper.make_node("Gemm", ["z2", "g_w"], ["z3"], transB=1),
             helper.make_node("Softmax", ["z3"], ["p"], axis=-1)]
    graph = helper.make_graph(nodes, "whole", [helper.make_tensor_value_info("ids", TensorProto.FLOAT, ["B", "T"])],
                              [helper.make_tensor_value_info("p", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


ONNX_SEEDS = [
    converters.to_onnx(random_spec(3, 4, num_layers=2, seed=1)).SerializeToString(),
    _whole_model_seed(),
    make_lstm_model(3, 4, direction="bidirectional", peephole=True, clip=3.0,
                    activations=["HardSigmoid", "Tanh", "Tanh"] * 2, alphas=[0.3], seed=2)[0].SerializeToString(),
]
# ONNX Runtime's int8 LSTM chain (com.microsoft.DynamicQuantizeLSTM: int8 weights, scales, zero points)
ONNX_SEEDS.append(ort_quantize_dynamic(converters.to_onnx(random_spec(3, 4, num_layers=2, num_directions=2, seed=3),
                                                          ir_version=8).SerializeToString(), per_channel=True))


def _note(label: str) -> None:
    """Outcome statistics (pytest --hypothesis-show-statistics); a no-op outside hypothesis (atheris)."""
    try:
        event(label)
    except InvalidArgument:
        pass


def check_packed(data: bytes) -> None:
    """The oracle: a FormatError, or a spec whose engine runs and answers with the right shape."""
    try:
        spec = parse_spec(data)
    except FormatError as exc:
        _note("FormatError: " + re.sub(r"\d+", "#", str(exc).split(": ", 2)[1][:25]))
        return
    _note("valid")
    eng = fastlstm.Engine(spec)
    if spec.vocab_size is not None:
        x = np.arange(2) % spec.vocab_size  # token ids
    else:
        x = np.linspace(-1, 1, 2 * spec.in_features, dtype=np.float32).reshape(2, spec.in_features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # flipped exponent bits make inf weights: fine
        y, _ = eng.run(x)
    assert y.shape == ((spec.out_features,) if spec.selects_last else (2, spec.out_features))


def check_onnx(data: bytes) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "converted the LSTM part only" notes
            spec = converters.from_onnx(data)
    except ConversionError as exc:
        _note("ConversionError: " + re.sub(r"\d+", "#", str(exc)[:30]))
        return
    _note("valid" if not spec.post else "valid whole model")
    eng = fastlstm.Engine(spec)
    x = np.arange(2) % spec.vocab_size if spec.vocab_size else np.ones((2, spec.in_features), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        y, _ = eng.run(x)
    assert y.shape == ((spec.out_features,) if spec.selects_last else (2, spec.out_features))


# -------------------------------------------------------------------------------- byte mutations


@st.composite
def mutated_bytes(draw, seed: bytes, hot: int = 0) -> bytes:
    """1-4 raw mutations; with `hot` (header size) positions favour the header JSON and the tensor data."""
    data = bytearray(seed)

    def position(extra=0):
        top = len(data) - 1 + extra
        if top < 0:
            return 0
        region = draw(st.sampled_from(["json", "data", "any"])) if hot else "any"
        if region == "json":  # the header JSON, not its length
            return draw(st.integers(min(8, top), min(hot, top)))
        if region == "data":  # the tensor bytes: float weights are free, int8 scales and -128 are checked
            return draw(st.integers(min(hot, top), top))
        return draw(st.integers(0, top))

    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite"]))
        if kind == "flip" and data:
            i = position()
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[position(1):]
        elif kind == "insert":
            i = position(1)
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete" and data:
            i = position()
            del data[i:i + draw(st.integers(1, 16))]
        elif kind == "overwrite" and data:
            i = position()
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[i:i + len(chunk)] = chunk
    return bytes(data)


# ------------------------------------------------------------------------- packed header edits

NASTY_INTS = st.one_of(
    st.sampled_from([0, -1, 1, 2, 3, 4, 7, 8, 1023, 1024, 10**6, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63,
                     2**64, -(2**63), 10**30]),
    st.integers(-(2**70), 2**70),
)
NASTY = st.one_of(
    NASTY_INTS,
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=6),
    st.lists(NASTY_INTS, max_size=4),
    st.dictionaries(st.text(max_size=4), NASTY_INTS, max_size=2),
)
DTYPES = st.sampled_from(["F32", "F16", "BF16", "F64", "I32", "U8", "I8", "U16", "f32", "F32 ", "", "BOOL"])
META_KEYS = ["format", "format_version", "input_size", "hidden_size", "num_layers", "num_directions",
             "proj_size", "cells", "source", "verify", "weights", "pre", "post"]


def _split_packed(data: bytes):
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = json.loads(header["__metadata__"]["fastlstm"])
    return header, meta, data[8 + n:]


LAYER_KEYS = ["kind", "vocab", "dim", "in", "out", "bias", "activation", "features", "eps", "state"]


@st.composite
def edited_packed(draw, seeds=(PACKED,)) -> bytes:
    """A seed with its header JSON edited (1-3 edits), re-serialised; sometimes the length lies too."""
    header, meta, body = _split_packed(draw(st.sampled_from(seeds)))
    tensors = sorted(k for k in header if k != "__metadata__")
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from(["meta", "meta_del", "cell", "tensor", "tensor_lie", "tensor_del",
                                       "tensor_add", "whole_header", "whole_meta", "version", "weights",
                                       "layer"]))
        if not isinstance(header, dict) or not isinstance(meta, dict):
            break  # an earlier edit replaced the whole header or metadata: nothing left to edit
        if target == "meta":
            meta[draw(st.sampled_from(META_KEYS))] = draw(NASTY)
        elif target == "layer" and isinstance(meta.get("post"), list) and meta["post"]:
            stack = meta.get(draw(st.sampled_from(["pre", "post"])))
            if isinstance(stack, list) and stack:
                entry = stack[draw(st.integers(0, len(stack) - 1))]
                if isinstance(entry, dict):
                    entry[draw(st.sampled_from(LAYER_KEYS))] = draw(st.one_of(
                        NASTY, st.sampled_from(["linear", "embedding", "select_last", "softmax", "relu"])))
                elif draw(st.booleans()):
                    stack.append(draw(NASTY))
        elif target == "meta_del":
            meta.pop(draw(st.sampled_from(META_KEYS)), None)
        elif target == "version":
            meta["format_version"] = draw(st.sampled_from([0, 1, 2, 3, 99, -1, "1", 1.0, None, True]))
        elif target == "weights":  # the weight type against the tensors' dtypes and scales
            meta["weights"] = draw(st.sampled_from(["fp32", "fp16", "bf16", "int8", "INT8", "fp8", None]))
        elif target == "cell" and isinstance(meta.get("cells"), list) and meta["cells"]:
            layer = meta["cells"][draw(st.integers(0, len(meta["cells"]) - 1))]
            if isinstance(layer, list) and layer and isinstance(layer[0], dict):
                cell = layer[draw(st.integers(0, len(layer) - 1))]
                if not isinstance(cell, dict):
                    continue
                key = draw(st.sampled_from(["options", "peephole", "reverse", "activations", "clip",
                                            "alphas"]))
                if key in ("options", "peephole", "reverse"):
                    cell[key] = draw(NASTY)
                elif isinstance(cell.get("options"), dict):
                    cell["options"][key] = draw(st.one_of(
                        NASTY, st.lists(st.sampled_from(["Sigmoid", "Tanh", "Relu", "Nope", "tanh"]),
                                        max_size=4)))
        elif target == "tensor":
            entry = header.get(draw(st.sampled_from(tensors)))  # may have been deleted
            if not isinstance(entry, dict):
                continue
            key = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
            entry[key] = draw(DTYPES if key == "dtype" else NASTY)
        elif target == "tensor_lie":  # plausible lies: one dimension or one offset a little off
            entry = header.get(draw(st.sampled_from(tensors)))
            key = draw(st.sampled_from(["shape", "data_offsets"]))
            if not isinstance(entry, dict) or not isinstance(entry.get(key), list) or not entry[key]:
                continue
            if not all(isinstance(v, int) for v in entry[key]):
                continue
            values = list(entry[key])
            i = draw(st.integers(0, len(values) - 1))
            values[i] += draw(st.sampled_from([-64, -4, -1, 1, 4, 64, 10**9]))
            entry[key] = values
        elif target == "tensor_del":
            header.pop(draw(st.sampled_from(tensors)), None)
        elif target == "tensor_add":
            header[draw(st.text(min_size=1, max_size=12))] = draw(NASTY)
        elif target == "whole_header":
            header = draw(st.one_of(NASTY, st.just([header])))
        elif target == "whole_meta":
            meta = draw(NASTY)
    if isinstance(header, dict) and isinstance(header.get("__metadata__"), dict):
        header["__metadata__"]["fastlstm"] = json.dumps(meta)
    raw = json.dumps(header).encode()
    length = len(raw)
    if draw(st.integers(0, 9)) == 0:
        length = draw(st.sampled_from([0, 1, 7, len(raw) - 1, len(raw) + 1, 2**32, 2**64 - 1]))
    return struct.pack("<Q", length) + raw + body


@budget(300)
@given(mutated_bytes(PACKED, hot=struct.unpack("<Q", PACKED[:8])[0] + 8))
def test_fuzz_packed_bytes(data):
    check_packed(data)


@budget(300)
@given(edited_packed())
def test_fuzz_packed_header(data):
    check_packed(data)


@budget(300)
@given(st.sampled_from(QUANTIZED_SEEDS).flatmap(
    lambda seed: mutated_bytes(seed, hot=struct.unpack("<Q", seed[:8])[0] + 8)))
def test_fuzz_quantized_packed_bytes(data):
    """Flips in int8 data may make -128 and flips in scales NaN, zero or negative: FormatErrors too."""
    check_packed(data)


@st.composite
def quantized_tensor_bytes(draw) -> bytes:
    """The int8 seed with 1-6 bytes overwritten inside its tensors (scales and int8 weights included):
    NaN, zero or negative scales and -128 weights must be refused, anything else must run."""
    seed = QUANTIZED_SEEDS[0]
    header, _, _ = _split_packed(seed)
    start = 8 + struct.unpack("<Q", seed[:8])[0]
    names = sorted(k for k in header if k != "__metadata__")
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        begin, end = header[draw(st.sampled_from(names))]["data_offsets"]
        data[start + draw(st.integers(begin, end - 1))] = draw(st.sampled_from([0x00, 0x80, 0x7F, 0xFF, 0xC0]))
    return bytes(data)


@budget(200)
@given(quantized_tensor_bytes())
def test_fuzz_quantized_tensor_bytes(data):
    check_packed(data)


@budget(300)
@given(edited_packed(tuple(QUANTIZED_SEEDS)))
def test_fuzz_quantized_packed_header(data):
    check_packed(data)


@budget(200)
@given(mutated_bytes(PACKED_LAYERS, hot=struct.unpack("<Q", PACKED_LAYERS[:8])[0] + 8))
def test_fuzz_packed_layers_bytes(data):
    check_packed(data)


@budget(250)
@given(edited_packed((PACKED_LAYERS,)))
def test_fuzz_packed_layers_header(data):
    check_packed(data)


def test_packed_seed_is_valid():
    """The fuzz seeds must themselves load, or the fuzzers only ever test the first check."""
    check_packed(PACKED)
    assert parse_spec(PACKED).num_layers == 2
    for seed, weights in zip(QUANTIZED_SEEDS, ("int8", "fp16", "bf16"), strict=True):
        check_packed(seed)
        assert parse_spec(seed).weights == weights
    check_packed(PACKED_LAYERS)
    assert len(parse_spec(PACKED_LAYERS).post) == 5
    for seed in ONNX_SEEDS:
        assert converters.from_onnx(seed).hidden_size == 4
    assert len(converters.from_onnx(ONNX_SEEDS[1]).post) == 4  # the whole-model seed converts whole


# ------------------------------------------------------------------------------------ ONNX edits

_LSTM_ATTRS = ["hidden_size", "layout", "input_forget", "clip", "direction", "activations",
               "activation_alpha", "activation_beta"]
_ATTR_VALUES = st.one_of(
    NASTY_INTS,
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from(["forward", "reverse", "bidirectional", "sideways", "", "\udcff"]).map(
        lambda s: s.encode("utf-8", "surrogateescape")),
    st.lists(st.sampled_from(["Sigmoid", "Tanh", "Relu", "Elu", "HardSigmoid", "Swish", "tanh"]),
             min_size=0, max_size=7),
    st.lists(st.floats(allow_nan=True, width=32), max_size=4),
    st.lists(st.integers(-5, 2**40), max_size=4),
)


@st.composite
def edited_onnx(draw) -> bytes:
    import onnx

    model = onnx.ModelProto()
    model.ParseFromString(draw(st.sampled_from(ONNX_SEEDS)))
    graph = model.graph
    lstms = [n for n in graph.node if n.op_type in ("LSTM", "DynamicQuantizeLSTM")]
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["attr", "attr_del", "init_dims", "init_type", "init_data", "op",
                                     "input", "node_del"]))
        if kind == "attr":
            node = draw(st.sampled_from(lstms))
            name = draw(st.sampled_from(_LSTM_ATTRS))
            value = draw(_ATTR_VALUES)
            kept = [a for a in node.attribute if a.name != name]
            del node.attribute[:]
            node.attribute.extend(kept)
            try:
                node.attribute.append(helper.make_attribute(name, value))
            except (ValueError, TypeError):  # make_attribute refuses empty lists and the like
                pass
        elif kind == "attr_del":
            node = draw(st.sampled_from(lstms))
            if node.attribute:
                del node.attribute[draw(st.integers(0, len(node.attribute) - 1))]
        elif kind.startswith("init") and graph.initializer:
            init = graph.initializer[draw(st.integers(0, len(graph.initializer) - 1))]
            if kind == "init_dims":
                dims = list(init.dims) or [1]
                dims[draw(st.integers(0, len(dims) - 1))] = draw(st.sampled_from([0, 1, 2, 3, 10**6, 2**40]))
                del init.dims[:]
                init.dims.extend(dims)
            elif kind == "init_type":
                init.data_type = draw(st.sampled_from([0, TensorProto.INT64, TensorProto.FLOAT16, TensorProto.INT8,
                                                       TensorProto.UINT8, TensorProto.DOUBLE, TensorProto.STRING, 99]))
            elif init.raw_data:
                init.raw_data = init.raw_data[: draw(st.integers(0, len(init.raw_data)))]
        elif kind == "op":
            node = draw(st.sampled_from(list(graph.node)))
            node.op_type = draw(st.sampled_from(["LSTM", "DynamicQuantizeLSTM", "GRU", "Relu", "Transpose", ""]))
        elif kind == "input":
            node = draw(st.sampled_from(list(graph.node)))
            if node.input:
                node.input[draw(st.integers(0, len(node.input) - 1))] = draw(
                    st.sampled_from(["", "X", "missing", node.output[0] if node.output else "Y"]))
        elif kind == "node_del" and len(graph.node) > 1:
            del graph.node[draw(st.integers(0, len(graph.node) - 1))]
    return model.SerializeToString()


@budget(150)
@given(st.sampled_from(range(len(ONNX_SEEDS))).flatmap(lambda i: mutated_bytes(ONNX_SEEDS[i])))
def test_fuzz_onnx_bytes(data):
    check_onnx(data)


@budget(120)
@given(edited_onnx())
def test_fuzz_onnx_structure(data):
    check_onnx(data)


# ------------------------------------------------------------------- absurd sizes fail fast, small


@pytest.mark.parametrize("key,value", [
    ("hidden_size", 10**6), ("hidden_size", 2**20), ("input_size", 2**20), ("num_layers", 1024),
    ("hidden_size", 10**12), ("hidden_size", -(10**6)),
])
def test_absurd_sizes_refused_before_allocating(key, value):
    """A 5 KiB file claiming a 10^6 hidden size is refused fast and without allocating its weights."""
    import time
    import tracemalloc

    header, meta, body = _split_packed(PACKED)
    meta[key] = value
    header["__metadata__"]["fastlstm"] = json.dumps(meta)
    raw = json.dumps(header).encode()
    data = struct.pack("<Q", len(raw)) + raw + body
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(FormatError):
            parse_spec(data)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 0.5
    assert peak < 1 << 20, f"parse_spec allocated {peak} bytes for a {len(data)}-byte file"


def test_onnx_absurd_hidden_size_fails_fast():
    """hidden_size=2^40 on small weights: a ConversionError, not a 2^40-element allocation."""
    import onnx

    model = onnx.ModelProto()
    model.ParseFromString(ONNX_SEEDS[0])
    for node in model.graph.node:
        if node.op_type == "LSTM":
            for a in node.attribute:
                if a.name == "hidden_size":
                    a.CopyFrom(helper.make_attribute("hidden_size", 2**40))
    with pytest.raises(ConversionError):
        converters.from_onnx(model.SerializeToString())
