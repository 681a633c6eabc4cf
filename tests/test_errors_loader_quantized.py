"""The packed loader on quantized files (format version 2): every lie is a one-line FormatError.

Each test edits one thing of a valid int8 / fp16 / bf16 file (tests/test_errors_loader.py does the same
for float32 files and the fields all files share).
"""

from __future__ import annotations

import functools
import json
import os
import struct
import tempfile

import numpy as np
import pytest
from specs import random_spec

import fastlstm
from fastlstm import FastLSTMError, FormatError
from fastlstm.format import parse_spec
from fastlstm.quantize import quantize

TYPES = ("int8", "fp16", "bf16")


@functools.cache
def packed(kind: str) -> bytes:
    """A valid 2-layer file with `kind` weights."""
    spec = quantize(random_spec(3, 4, num_layers=2, seed=3), kind)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.fastlstm")
        fastlstm.save(spec, path)
        with open(path, "rb") as f:
            return f.read()


@pytest.fixture(params=TYPES)
def good(request):
    return request.param, packed(request.param)


@pytest.fixture
def int8_file():
    return packed("int8")


def split(data: bytes):
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    return header, json.loads(header["__metadata__"]["fastlstm"]), bytearray(data[8 + n:])


def join(header, meta, body) -> bytes:
    header = dict(header)
    header["__metadata__"] = {"fastlstm": json.dumps(meta)}
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(body)


def refused(data: bytes, match: str) -> None:
    with pytest.raises(FormatError, match=match) as info:
        parse_spec(data)
    assert isinstance(info.value, FastLSTMError) and "\n" not in str(info.value)


def test_good_quantized_file_loads(good):
    kind, data = good
    spec = parse_spec(data)
    assert spec.weights == kind
    assert fastlstm.Engine(spec).run(np.ones((2, 3), np.float32))[0].shape == (2, 4)


@pytest.mark.parametrize("weights", ["fp64", "INT8", "", None, 8, ["int8"]])
def test_unknown_weight_type(good, weights):
    header, meta, body = split(good[1])
    meta["weights"] = weights
    refused(join(header, meta, body), "metadata weights=.* is not one of fp32, fp16, bf16, int8")


def test_missing_weight_type_in_version_2(good):
    header, meta, body = split(good[1])
    del meta["weights"]
    refused(join(header, meta, body), "metadata weights=None")


@pytest.mark.parametrize("kind,lie", [(k, lie) for k in TYPES for lie in ("fp32", *TYPES) if lie != k])
def test_tensor_dtype_other_than_the_metadata_says(kind, lie):
    """A bf16 tensor where the metadata says int8 (and every other pairing): refused by dtype or tensor set."""
    header, meta, body = split(packed(kind))
    meta["weights"] = lie
    refused(join(header, meta, body), "expected '(F32|F16|BF16|I8)'|tensors do not match the metadata")


def test_tensor_dtype_lie_in_the_header(good):
    kind, data = good
    header, meta, body = split(data)
    header["layers.1.0.R"]["dtype"] = "I8" if kind != "int8" else "BF16"
    refused(join(header, meta, body), "tensor layers.1.0.R has dtype .* expected")


def test_int8_without_scales(int8_file):
    header, meta, body = split(int8_file)
    del header["layers.0.0.W.scale"]
    refused(join(header, meta, body), r"missing \['layers.0.0.W.scale'\]")


@pytest.mark.parametrize("kind", ["fp16", "bf16"])
def test_scales_where_there_should_be_none(kind):
    header, meta, body = split(packed(kind))
    header["layers.0.0.W.scale"] = {"dtype": "F32", "shape": [16], "data_offsets": [0, 64]}
    refused(join(header, meta, body), r"unexpected \['layers.0.0.W.scale'\]")


@pytest.mark.parametrize("shape", [[15], [16, 1], [], [4]])
def test_scale_shape(int8_file, shape):
    header, meta, body = split(int8_file)
    header["layers.0.0.R.scale"]["shape"] = shape
    refused(join(header, meta, body), "tensor layers.0.0.R.scale has shape")


def test_scale_dtype(int8_file):
    header, meta, body = split(int8_file)
    header["layers.0.0.R.scale"]["dtype"] = "F16"
    refused(join(header, meta, body), "layers.0.0.R.scale has dtype 'F16', expected 'F32'")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 0.0, -0.0, -0.5])
def test_bad_scale_values(int8_file, value):
    header, meta, body = split(int8_file)
    begin = header["layers.1.0.W.scale"]["data_offsets"][0]
    body[begin + 4 * 7:begin + 4 * 8] = np.float32(value).tobytes()
    refused(join(header, meta, body), "layer 1 direction 0 W: int8 scale of row 7 is .* finite and > 0")


def test_minus_128_is_not_symmetric(int8_file):
    header, meta, body = split(int8_file)
    begin = header["layers.0.0.R"]["data_offsets"][0]
    body[begin + 4 * 2] = 0x80  # row 2, column 0
    refused(join(header, meta, body), "layer 0 direction 0 R: int8 weight -128 in row 2")


def test_truncated_quantized_tensor(good):
    kind, data = good
    header, meta, body = split(data)
    begin, end = header["layers.1.0.W"]["data_offsets"]
    header["layers.1.0.W"]["data_offsets"] = [begin, end - 1]
    refused(join(header, meta, body), "tensor layers.1.0.W spans bytes .* but needs")
    refused(data[:-3], "spans bytes .* inside the .* data bytes present")


def test_int8_size_claimed_as_fp32_bytes(int8_file):
    """I8 tensors take one byte per weight: a header claiming 4 is refused, not read past."""
    header, meta, body = split(int8_file)
    begin, end = header["layers.0.0.W"]["data_offsets"]
    header["layers.0.0.W"]["data_offsets"] = [begin, begin + 4 * (end - begin)]
    refused(join(header, meta, body), "tensor layers.0.0.W spans bytes")
