"""Reduced-precision weights (issue #13): quantizers, the spec's checks, the engine on quantized specs,
files, load(weights=), and the stated error bounds (docs/quantization.md).

Oracles: numpy's float16 cast and torch's bfloat16 rounding for the quantizers, the float64 reference
(tests/reference.py) run on weights dequantized here independently, and the bound formulas themselves.
"""

from __future__ import annotations

import dataclasses
import json
import struct

import numpy as np
import pytest
from reference import reference_run
from specs import random_spec, rel_error

import converters
import fastlstm
from fastlstm import ConversionError, FormatError, InputError, SpecError
from fastlstm.benchmarking.models import make_spec
from fastlstm.quantize import dequantize, quantize, quantize_matrix
from fastlstm.quantized import QuantizedMatrix

TYPES = ("fp16", "bf16", "int8")


def independent_dequantize(m) -> np.ndarray:
    """float64 weights of a QuantizedMatrix, computed without fastlstm's dequantize()."""
    if m.kind == "fp16":
        return m.data.astype(np.float64)
    if m.kind == "bf16":
        return np.array([struct.unpack("<f", struct.pack("<I", int(v) << 16))[0] for v in m.data.ravel()],
                        np.float64).reshape(m.shape)
    return m.data.astype(np.float64) * m.scale.astype(np.float64)[:, None]


def float64_spec(spec):
    layers = [[dataclasses.replace(ds, W=independent_dequantize(ds.W), R=independent_dequantize(ds.R))
               for ds in layer] for layer in spec.layers]
    return dataclasses.replace(spec, layers=layers)


def frames(T, B, I, seed=0):
    return np.random.default_rng(seed).standard_normal((T, B, I)).astype(np.float32)


# ------------------------------------------------------------------------------------ quantizers


def test_fp16_is_numpys_rounding_and_refuses_overflow():
    w = np.random.default_rng(0).normal(0, 3, (8, 5)).astype(np.float32)
    w[0, 0], w[1, 1] = 65519.0, -1e-9  # rounds to 65504 (kept); a subnormal in fp16
    q = quantize_matrix(w, "fp16")
    assert q.data.dtype == np.float16 and np.array_equal(q.data, w.astype(np.float16))
    w[2, 3] = 70000.0
    with pytest.raises(ConversionError, match=r"layer 0 W: weight \[2, 3\] = 70000 is beyond fp16's range"):
        quantize_matrix(w, "fp16", "layer 0 W")


def test_bf16_rounds_to_nearest_even_like_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    w = np.concatenate([rng.normal(0, 1, 4000), rng.normal(0, 1e-30, 100), rng.normal(0, 1e30, 100)])
    bits = rng.integers(0, 1 << 16, 200, dtype=np.uint32)  # exact ties: low half 0x8000
    ties = ((rng.integers(0x3000, 0x4800, 200, dtype=np.uint32) << 16) | 0x8000 | (bits & 0)).view(np.float32)
    w = np.concatenate([w.astype(np.float32), ties]).reshape(20, -1)
    q = quantize_matrix(w, "bf16")
    expected = torch.from_numpy(w).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(q.data, expected)
    big = np.full((1, 2), np.finfo(np.float32).max, np.float32)
    with pytest.raises(ConversionError, match="rounds beyond bf16's range"):
        quantize_matrix(big, "bf16")


def test_int8_per_row_scale_and_rounding():
    rng = np.random.default_rng(2)
    w = rng.normal(0, 0.1, (12, 30)).astype(np.float32)
    w[3] = 0.0  # all-zero row
    w[4] = 1e-44  # a scale that would underflow float32
    w[5, 7] = -4.0  # a row dominated by one weight
    q = quantize_matrix(w, "int8")
    assert q.data.dtype == np.int8 and q.scale.dtype == np.float32 and q.scale.shape == (12,)
    assert q.data.min() >= -127 and q.data.max() <= 127
    assert np.all(np.isfinite(q.scale) & (q.scale > 0)) and q.scale[3] == 1.0
    peak = np.abs(w).max(axis=1)
    normal = peak > 1e-30
    assert np.allclose(q.scale[normal], peak[normal] / 127, rtol=1e-6)
    assert np.all(np.abs(q.data[normal]).max(axis=1) == 127)  # the row's peak uses the full range
    err = np.abs(w.astype(np.float64) - independent_dequantize(q))
    assert np.all(err <= q.scale.astype(np.float64)[:, None] / 2 * (1 + 1e-6) + 1e-45)


@pytest.mark.parametrize("kind", TYPES)
def test_non_finite_weights_are_refused(kind):
    w = np.ones((4, 3), np.float32)
    w[1, 2] = np.nan
    with pytest.raises(ConversionError, match=r"R: weight \[1, 2\] is nan"):
        quantize_matrix(w, kind, "R")


# ------------------------------------------------------------------------------- spec checks


def test_quantize_spec_leaves_the_source_alone_and_refuses_requantizing():
    spec = random_spec(5, 8, num_layers=2, num_directions=2, seed=1)
    W0 = spec.layers[0][0].W.copy()
    q = converters.quantize(spec, "int8")
    assert spec.weights == "fp32" and np.array_equal(spec.layers[0][0].W, W0)
    assert q.weights == "int8" and all(isinstance(ds.R, QuantizedMatrix) for layer in q.layers for ds in layer)
    assert quantize(q, "int8") is q and quantize(spec, "fp32") is spec
    with pytest.raises(ConversionError, match="already int8"):
        quantize(q, "fp16")
    with pytest.raises(ConversionError, match="unknown weight type 'int4'"):
        quantize(spec, "int4")
    assert dequantize(q).weights == "fp32"


def _int8_spec():
    return quantize(random_spec(3, 4, seed=2), "int8")


@pytest.mark.parametrize("edit,match", [
    (lambda ds: dataclasses.replace(ds, R=ds.R.dequantize()), "weight type fp32, but the model's weights are int8"),
    (lambda ds: dataclasses.replace(ds, W=QuantizedMatrix("fp16", ds.W.data.astype(np.float16))),
     "R: weight type int8, but the model's weights are fp16"),
    (lambda ds: dataclasses.replace(ds, W=QuantizedMatrix("int8", ds.W.data.astype(np.int16), ds.W.scale)),
     "must be stored as int8, found int16"),
    (lambda ds: dataclasses.replace(ds, W=QuantizedMatrix("int8", ds.W.data, ds.W.scale[:-1])),
     r"one scale per row, shape \(16,\)"),
    (lambda ds: dataclasses.replace(ds, W=QuantizedMatrix("int8", ds.W.data, ds.W.scale.astype(np.float64))),
     "scales must be float32"),
    (lambda ds: dataclasses.replace(ds, W=QuantizedMatrix("int8", ds.W.data, _with(ds.W.scale, 3, np.nan))),
     "scale of row 3 is .*nan"),
    (lambda ds: dataclasses.replace(ds, W=QuantizedMatrix("int8", ds.W.data, _with(ds.W.scale, 0, 0.0))),
     "scale of row 0 is .*0.0"),
    (lambda ds: dataclasses.replace(ds, W=QuantizedMatrix("int8", ds.W.data, _with(ds.W.scale, 1, -1.0))),
     "finite and > 0"),
    (lambda ds: dataclasses.replace(ds, W=QuantizedMatrix("int8", _with(ds.W.data, 15, -128), ds.W.scale)),
     "-128 in row 5"),
    (lambda ds: dataclasses.replace(ds, W=QuantizedMatrix("int8", ds.W.data[:, :2], ds.W.scale)),
     r"expected shape \(16, 3\)"),
    (lambda ds: dataclasses.replace(ds, W=QuantizedMatrix("fp8", ds.W.data, ds.W.scale)),
     "unknown weight type 'fp8'"),
])
def test_spec_validation_of_quantized_weights(edit, match):
    spec = _int8_spec()
    spec.layers[0][0] = edit(spec.layers[0][0])
    with pytest.raises(SpecError, match=match):
        spec.validate()


def _with(array, index, value):
    out = array.copy()
    out.reshape(-1)[index] = value
    return out


# ----------------------------------------------------------------------------------- the engine


@pytest.mark.parametrize("kind", TYPES)
def test_engine_runs_the_weights_the_matrices_stand_for(kind):
    """Oracle: the float64 reference on weights dequantized independently of fastlstm."""
    spec = quantize(random_spec(5, 12, num_layers=2, num_directions=2, proj_size=0, peephole=True, seed=3), kind)
    x = frames(9, 2, 5)
    y, st = fastlstm.Engine(spec).run(x)
    ref_y, ref_h, ref_c = reference_run(float64_spec(spec), x)
    assert rel_error(y, ref_y) <= 2e-5 and rel_error(st.c, ref_c) <= 2e-5
    y_dq, _ = fastlstm.Engine(dequantize(spec)).run(x)
    if kind == "int8":  # the kernels scale each piece's sum, not each weight: float32 rounding apart
        assert rel_error(y, y_dq) <= 2e-6
    else:  # fp16 / bf16 widen exactly: dequantize()'s numbers, bit for bit
        assert np.array_equal(y, y_dq)


@pytest.mark.parametrize("kind", TYPES)
def test_step_equals_run_and_batch_equals_single_streams(kind):
    spec = quantize(random_spec(6, 20, num_layers=2, proj_size=7, seed=4), kind)
    eng = fastlstm.Engine(spec)
    x = frames(12, 3, 6, seed=5)
    y_run, final = eng.run(x)
    st = eng.new_state(3)
    y_step = np.stack([eng.step(x[t], st) for t in range(12)])
    assert np.array_equal(y_step, y_run) and np.array_equal(st.c, final.c)
    for b in range(3):
        y_one, _ = eng.run(x[:, b])
        assert np.array_equal(y_one, y_run[:, b])


# ---------------------------------------------------------------------------------------- files


@pytest.mark.parametrize("kind,ratio", [("int8", 0.27), ("fp16", 0.51), ("bf16", 0.51)])
def test_file_round_trip_and_size(kind, ratio, tmp_path):
    spec = make_spec(128)  # W + R dominate: ~1/4 (int8 + its scales) or 1/2 of the fp32 file
    fp32_path, path = tmp_path / "fp32.fastlstm", tmp_path / f"{kind}.fastlstm"
    fastlstm.save(spec, fp32_path)
    q = quantize(spec, kind)
    fastlstm.save(q, path)
    back = fastlstm.format.read_spec(path)
    assert back.weights == kind
    for a, b in ((q.layers[0][0].W, back.layers[0][0].W), (q.layers[0][0].R, back.layers[0][0].R)):
        assert np.array_equal(a.data, b.data) and a.data.dtype == b.data.dtype
        assert (a.scale is None and b.scale is None) or np.array_equal(a.scale, b.scale)
    assert path.stat().st_size <= ratio * fp32_path.stat().st_size
    x = frames(5, 1, 128)
    assert np.array_equal(fastlstm.load(path).run(x)[0], fastlstm.Engine(q).run(x)[0])


def test_files_are_safetensors_with_i8_f16_bf16(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    spec = random_spec(3, 4, seed=6)
    for kind, dtype in (("int8", torch.int8), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
        q = quantize(spec, kind)
        path = tmp_path / f"{kind}.fastlstm"
        fastlstm.save(q, path)
        tensors = load_file(str(path))
        W = q.layers[0][0].W
        assert tensors["layers.0.0.W"].dtype == dtype
        assert np.array_equal(tensors["layers.0.0.W"].float().numpy(), W.dequantize() if kind != "int8"
                              else W.data.astype(np.float32))
        if kind == "int8":
            assert np.array_equal(tensors["layers.0.0.W.scale"].numpy(), W.scale)
        else:
            assert "layers.0.0.W.scale" not in tensors
        meta = json.loads(json.loads(path.read_bytes()[8:8 + struct.unpack("<Q", path.read_bytes()[:8])[0]])
                          ["__metadata__"]["fastlstm"])
        assert meta["weights"] == kind and meta["format_version"] == 2


def test_version_1_files_still_load(tmp_path):
    spec = random_spec(3, 4, seed=7)
    path = tmp_path / "m.fastlstm"
    fastlstm.save(spec, path)
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = json.loads(header["__metadata__"]["fastlstm"])
    meta["format_version"] = 1
    del meta["weights"]
    header["__metadata__"]["fastlstm"] = json.dumps(meta)
    raw = json.dumps(header).encode()
    v1 = struct.pack("<Q", len(raw)) + raw + data[8 + n:]
    back = fastlstm.format.parse_spec(v1)
    assert back.weights == "fp32" and np.array_equal(back.layers[0][0].W, spec.layers[0][0].W)
    meta["weights"] = "int8"  # version 1 knew fp32 only
    header["__metadata__"]["fastlstm"] = json.dumps(meta)
    raw = json.dumps(header).encode()
    with pytest.raises(FormatError, match="version 1 files are fp32"):
        fastlstm.format.parse_spec(struct.pack("<Q", len(raw)) + raw + data[8 + n:])


def test_load_quantizes_fp32_files_and_refuses_other_types(tmp_path):
    spec = random_spec(4, 8, seed=8)
    path = tmp_path / "m.fastlstm"
    fastlstm.save(spec, path)
    x = frames(6, 1, 4)
    for kind in TYPES:
        eng = fastlstm.load(path, weights=kind)
        assert eng.spec.weights == kind
        assert np.array_equal(eng.run(x)[0], fastlstm.Engine(quantize(spec, kind)).run(x)[0])
    assert fastlstm.load(path, weights="fp32").spec.weights == "fp32"
    with pytest.raises(InputError, match="unknown weight type 'int4'"):
        fastlstm.load(path, weights="int4")
    q_path = tmp_path / "q.fastlstm"
    fastlstm.save(quantize(spec, "int8"), q_path)
    assert fastlstm.load(q_path, weights="int8").spec.weights == "int8"
    for other in ("fp32", "fp16"):
        with pytest.raises(InputError, match="holds int8 weights; it loads only as int8"):
            fastlstm.load(q_path, weights=other)


# ------------------------------------------------------------------------------ stated bounds

UNIT_ROUNDOFF = {"fp16": 2.0**-11, "bf16": 2.0**-8}


@pytest.mark.parametrize("kind", TYPES)
def test_per_step_gate_bound(kind):
    """docs/quantization.md: |Δz_j| <= sum_k |ΔW_jk| |x_k| + sum_k |ΔR_jk| |h_k| <= the type's bound:
    fp16/bf16  u * (sum_k |W_jk x_k| + sum_k |R_jk h_k|) + 2^-25 (||x||_1 + ||h||_1) (fp16's subnormals)
    int8       max|W_j| / 254 * ||x||_1 + max|R_j| / 254 * ||h||_1"""
    rng = np.random.default_rng(9)
    W = rng.uniform(-0.3, 0.3, (64, 40)).astype(np.float32)
    R = rng.uniform(-0.3, 0.3, (64, 16)).astype(np.float32)
    W[0, :5] = 1e-7  # fp16 subnormals
    Wq, Rq = quantize_matrix(W, kind), quantize_matrix(R, kind)
    for _ in range(20):
        x = rng.standard_normal(40) * rng.uniform(0.1, 5)
        h = rng.uniform(-1, 1, 16)
        dz = (independent_dequantize(Wq) - W) @ x + (independent_dequantize(Rq) - R) @ h
        if kind == "int8":
            bound = np.abs(W).max(1) / 254 * np.abs(x).sum() + np.abs(R).max(1) / 254 * np.abs(h).sum()
        else:
            bound = UNIT_ROUNDOFF[kind] * (np.abs(W) @ np.abs(x) + np.abs(R) @ np.abs(h))
            bound += 2.0**-25 * (np.abs(x).sum() + np.abs(h).sum())
        assert np.all(np.abs(dz) <= bound * (1 + 1e-6))
        assert np.abs(dz).max() > 0  # quantization did change something: the test can fail


# the documented envelope on random PyTorch-init models with N(0, 1) inputs (docs/quantization.md)
ENVELOPE = {"fp16": 2e-3, "bf16": 1.5e-2, "int8": 2e-2}


@pytest.mark.parametrize("hidden,layers", [(64, 1), (128, 2)])
def test_output_error_on_random_models(hidden, layers):
    """Over 400 steps the error stays inside the envelope, ordered fp16 < bf16 < int8, and int8's is
    below a tenth of ONNX Runtime's int8 (quantize_dynamic) on the same weights and input."""
    from fastlstm.benchmarking.accuracy import ort_int8_output, random_case, weight_type_errors

    spec, x = random_case(hidden, layers, steps=400)
    errors, reference = weight_type_errors(spec, x)
    for kind in TYPES:
        assert errors[kind]["max_abs"] <= ENVELOPE[kind], (kind, errors[kind])
        assert 0 < errors[kind]["rms"] < errors[kind]["max_abs"]
    assert errors["fp16"]["max_abs"] < errors["bf16"]["max_abs"] < errors["int8"]["max_abs"]
    ort = np.abs(ort_int8_output(spec, x, per_channel=False).reshape(reference.shape) - reference).max()
    assert errors["int8"]["max_abs"] <= ort / 10, (errors["int8"], ort)
