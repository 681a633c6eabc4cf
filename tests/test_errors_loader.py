"""The packed loader refuses empty, truncated and tampered files with a FormatError (issue #6).

Each test builds a lying file from a valid one, so the one thing wrong is the thing named in the test.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
from specs import random_spec

import fastlstm
from fastlstm import FastLSTMError, FormatError
from fastlstm.format import FORMAT_VERSION, MAX_HEADER_BYTES, parse_spec, read_spec


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> bytes:
    spec = random_spec(3, 4, num_layers=2, peephole=True, seed=3)
    path = tmp_path_factory.mktemp("good") / "m.fastlstm"
    fastlstm.save(spec, path)
    return path.read_bytes()


def split(data: bytes):
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    return header, json.loads(header["__metadata__"]["fastlstm"]), data[8 + n:]


def join(header, meta, body: bytes) -> bytes:
    header = dict(header)
    header["__metadata__"] = {"fastlstm": json.dumps(meta)}
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def refused(data: bytes, match: str) -> FormatError:
    with pytest.raises(FormatError, match=match) as info:
        parse_spec(data)
    assert isinstance(info.value, FastLSTMError) and "\n" not in str(info.value)
    return info.value


def test_good_file_loads(good):
    assert parse_spec(good).num_layers == 2


# ------------------------------------------------------------------------ empty and truncated


def test_empty_file(tmp_path):
    path = tmp_path / "empty.fastlstm"
    path.write_bytes(b"")
    with pytest.raises(FormatError, match="0 bytes is too short"):
        fastlstm.load(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FormatError, match="cannot read"):
        fastlstm.load(tmp_path / "nope.fastlstm")
    with pytest.raises(FormatError, match="not a regular file"):
        fastlstm.load(tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.fastlstm"
    os.mkfifo(fifo)
    with pytest.raises(FormatError, match="not a regular file"):  # open() would block forever
        fastlstm.load(fifo)


def test_truncated_anywhere(good, tmp_path):
    """Every cut (in the length, the header, the data) is a FormatError; the file path is named."""
    n = struct.unpack("<Q", good[:8])[0]
    for cut in sorted({0, 1, 7, 8, 9, 8 + n // 2, 8 + n - 1, 8 + n, 8 + n + 1, len(good) - 4, len(good) - 1}):
        refused(good[:cut], "too short|header claims|spans bytes")
    path = tmp_path / "cut.fastlstm"
    path.write_bytes(good[:-1])
    with pytest.raises(FormatError, match=r"cut\.fastlstm: tensor .* spans bytes .* inside the \d+ data bytes"):
        read_spec(path)


def test_data_shorter_than_declared(good):
    header, meta, body = split(good)
    refused(join(header, meta, body[: len(body) // 2]), "spans bytes")


def test_random_and_foreign_files(good):
    rng = np.random.default_rng(0)
    refused(rng.bytes(4096), "header claims|not a fastlstm file")
    refused(b"\x89PNG\r\n\x1a\n" + rng.bytes(100), "header claims")
    refused(b"\x08\x07\x12\x07pytorch" + bytes(50), "header claims")  # an ONNX protobuf
    # a genuine safetensors file without fastlstm metadata (e.g. someone's PyTorch weights)
    raw = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    refused(struct.pack("<Q", len(raw)) + raw + bytes(8), "not a fastlstm file")


# ----------------------------------------------------------------------------- lying headers


def test_header_length_lies(good):
    body = good[8:]
    refused(struct.pack("<Q", 2**64 - 1) + body, "header claims")
    refused(struct.pack("<Q", MAX_HEADER_BYTES + 1) + body, "header claims")
    refused(struct.pack("<Q", 0) + body, "not a fastlstm file")
    refused(struct.pack("<Q", 5) + body, "not a fastlstm file")


@pytest.mark.parametrize("header", [[], 3, "x", None, [{"__metadata__": {}}]])
def test_header_is_not_a_json_object(header):
    raw = json.dumps(header).encode()
    refused(struct.pack("<Q", len(raw)) + raw, "not a fastlstm file|malformed header")


def test_header_is_not_json_or_utf8():
    for raw in (b"{not json", b"\xff\xfe\xfd{}", b"{" * 100_000 + b"}" * 100_000, b"[" * 200_000):
        refused(struct.pack("<Q", len(raw)) + raw, "not a fastlstm file")


@pytest.mark.parametrize("version", [0, FORMAT_VERSION + 1, 99, "1", 1.0, None, True])
def test_wrong_version(good, version):
    header, meta, body = split(good)
    meta["format_version"] = version
    refused(join(header, meta, body), "format version .* is not supported")


def test_wrong_format_name(good):
    header, meta, body = split(good)
    meta["format"] = "onnx"
    refused(join(header, meta, body), "not a fastlstm file")


@pytest.mark.parametrize("dtype", ["F16", "F64", "BF16", "I32", "f32", None, 7])
def test_unknown_dtype(good, dtype):
    header, meta, body = split(good)
    header["layers.0.0.R"]["dtype"] = dtype
    refused(join(header, meta, body), r"tensor layers\.0\.0\.R has dtype .*expected 'F32'")


@pytest.mark.parametrize("shape", [[16, 5], [4, 16], [64], [], [16, 4, 1], "16x4", None, [-16, -4]])
def test_shape_lies(good, shape):
    header, meta, body = split(good)
    header["layers.0.0.R"]["shape"] = shape
    refused(join(header, meta, body), r"tensor layers\.0\.0\.R has shape .* metadata implies \[16, 4\]")


@pytest.mark.parametrize("key,value", [("hidden_size", 5), ("input_size", 4), ("num_layers", 1),
                                       ("num_directions", 2), ("proj_size", 2)])
def test_metadata_contradicts_tensors(good, key, value):
    header, meta, body = split(good)
    meta[key] = value
    refused(join(header, meta, body), "has shape|tensors do not match|metadata")


@pytest.mark.parametrize("key,value", [
    ("hidden_size", 10**6), ("hidden_size", 2**64), ("hidden_size", -4), ("hidden_size", 0),
    ("hidden_size", 4.0), ("hidden_size", "4"), ("hidden_size", True), ("num_layers", 10**9),
    ("num_directions", 3), ("proj_size", -1), ("input_size", None),
])
def test_absurd_or_mistyped_sizes(good, key, value):
    header, meta, body = split(good)
    meta[key] = value
    refused(join(header, meta, body), "metadata|has shape|tensors do not match")


def test_huge_hidden_size_on_a_tiny_file_does_not_allocate(good):
    """Refused from the header alone: the parser never allocates what a header claims."""
    header, meta, body = split(good)
    meta["hidden_size"] = 2**20
    for name, entry in header.items():
        if name.endswith(".R"):
            entry["shape"] = [4 * 2**20, 2**20]  # the header's tensors agree with the lie
    refused(join(header, meta, body), "has shape|spans bytes")  # fails fast (tests/test_fuzz.py measures)


@pytest.mark.parametrize("offsets", [
    [0, 10**12], [-256, 0], [256, 0], [0, 255], [1, 257], "0-256", [0], [0, 256, 512], [0.0, 256.0],
    [True, 257], None,
])
def test_offset_lies(good, offsets):
    header, meta, body = split(good)
    header["layers.0.0.R"]["data_offsets"] = offsets
    refused(join(header, meta, body), r"tensor layers\.0\.0\.R (spans bytes|has malformed data_offsets)|overlap")


def test_overlapping_tensors(good):
    header, meta, body = split(good)
    w, r = header["layers.0.0.W"], header["layers.0.0.R"]
    # give W and R the same length window: R claims W's bytes, W stays where it is
    assert w["shape"] == [16, 3] and r["shape"] == [16, 4]
    r["data_offsets"] = [w["data_offsets"][0], w["data_offsets"][0] + 256]
    refused(join(header, meta, body), "overlap")


def test_missing_and_extra_tensors(good):
    header, meta, body = split(good)
    del header["layers.1.0.peephole"]
    refused(join(header, meta, body), r"missing \['layers\.1\.0\.peephole'\]")
    header, meta, body = split(good)
    header["evil"] = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    refused(join(header, meta, body), r"unexpected \['evil'\]")


@pytest.mark.parametrize("cells", [
    None, [], [[{}]], "cells", [[{"options": {"activations": ["Sigmoid", "Tanh", "Swish"],
                                              "alphas": [0, 0, 0], "betas": [0, 0, 0]}}]] * 2,
    [[{"options": {"activations": ["Sigmoid", "Tanh"], "alphas": [0, 0], "betas": [0, 0]}}]] * 2,
    [[{"options": {"activations": ["Sigmoid", "Tanh", "Tanh"], "alphas": [0, 0, 0], "betas": [0, 0, 0],
                   "clip": -1}}]] * 2,
    [[{"options": "Sigmoid"}]] * 2, [[7]] * 2,
])
def test_bad_cell_options(good, cells):
    header, meta, body = split(good)
    meta["cells"] = cells
    refused(join(header, meta, body), "cells|cell|activation|clip|tensors do not match")


def test_long_lies_give_short_messages(good):
    header, meta, body = split(good)
    header["layers.0.0.R"]["shape"] = list(range(100_000))
    err = refused(join(header, meta, body), "has shape")
    assert len(str(err)) < 300


def test_bit_flips_in_weights_load_and_are_not_errors(good):
    """Weights are free data: flipping their bits gives a valid (different) model, never an error."""
    n = struct.unpack("<Q", good[:8])[0]
    data = bytearray(good)
    data[8 + n + 5] ^= 0x40
    assert parse_spec(bytes(data)).num_layers == 2


def test_parse_spec_wants_bytes():
    with pytest.raises(FormatError, match="expected the file's bytes"):
        parse_spec("model.fastlstm")
