"""Layers around the LSTM: kernels against the float64 NumPy reference, run() against step(), the spec's
checks, the packed file (version 2 with the layers, version 1 still read), token id errors.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from reference import reference_layers, reference_model
from specs import random_spec, rel_error

import fastlstm
from fastlstm import FormatError, InputError, SpecError
from fastlstm.format import parse_spec
from fastlstm.layers import Activation, Embedding, LayerNorm, Linear, SelectLast

TOL = 2e-5
rng = np.random.default_rng(7)


def linear(n_out, n_in, act="none", bias=True, scale=0.5):
    return Linear(rng.normal(0, scale, (n_out, n_in)), rng.normal(0, 0.3, n_out) if bias else None, act)


def head_rows(layers, x):
    """The layers as the head of a model (after an LSTM of their input width), on the rows x: the kernel
    run()'s output stage calls (kernels/model.run_head), as many rows as given."""
    spec = random_spec(3, layers[0].in_features, seed=1)
    spec.post = layers
    eng = fastlstm.Engine(spec.validate())
    return eng._head(np.ascontiguousarray(x, np.float32))


# ---------------------------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("n_out", [1, 15, 16, 17, 31, 32, 33, 64, 65, 100])
@pytest.mark.parametrize("K", [1, 3, 40, 130])
def test_linear_widths(n_out, K):
    """The GEMV / GEMM tiles (blocks of G = 4 * LANES outputs, 32 or 64) and their tails, one or two summation
    pieces of k (K = 130), with and without bias, against float64; every row the same bits whichever tile
    computed it (run() and step() agree)."""
    layers = [linear(n_out, K, bias=n_out % 2 == 1)]
    x = rng.normal(0, 1, (7, K)).astype(np.float32)
    y = head_rows(layers, x)
    assert rel_error(y, reference_layers(layers, x)) <= 1e-6
    for r in range(7):  # one row alone (the GEMV) = that row in the 4-row tile
        assert np.array_equal(head_rows(layers, x[r:r + 1])[0], y[r])


@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid", "softmax", "log_softmax"])
def test_activations_in_a_stack(act):
    layers = [LayerNorm(rng.normal(1, 0.2, 24), rng.normal(0, 0.2, 24)), linear(33, 24, "relu"),
              Activation("tanh", 33), linear(19, 33, act)]
    x = rng.normal(0, 2, (130, 24)).astype(np.float32)  # 130 rows: three chunks of the row loop
    assert rel_error(head_rows(layers, x), reference_layers(layers, x)) <= TOL


@pytest.mark.parametrize("kind", ["softmax", "log_softmax"])
def test_softmax_is_stable_in_float32(kind):
    """Logits of +-1e4 and a vocabulary-sized row: no overflow, softmax rows sum to 1."""
    x = np.concatenate([rng.normal(0, 1, (3, 30001)) * 1e4, rng.normal(0, 1, (1, 30001))]).astype(np.float32)
    x[0, 5] = 3e4
    # the rows come out of a Linear that copies them exactly: weight x.T times one-hot rows (each output one
    # product by 1 and sums of exact zeros), so the softmax sees these values (a 30001-wide LSTM is too big)
    head = [Linear(x.T.copy(), None), Activation(kind, 30001)]
    y = head_rows(head, np.eye(4, dtype=np.float32))
    assert np.all(np.isfinite(y))
    ref = reference_layers([Activation(kind, 30001)], x)
    assert rel_error(y, ref) <= TOL
    if kind == "softmax":
        np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)


def test_layer_norm_of_a_constant_row():
    ln = LayerNorm(rng.normal(1, 0.2, 40), rng.normal(0, 0.2, 40), eps=1e-3)
    x = np.full((2, 40), 3.25, np.float32)
    assert rel_error(head_rows([ln], x), reference_layers([ln], x)) <= TOL


def test_token_kernel_names_the_first_bad_id():
    """The input stage finds an id outside [0, V) (its kernel writes nothing), run() names the first one."""
    spec = random_spec(5, 4, seed=2)
    spec.pre = [Embedding(rng.normal(0, 1, (10, 5)))]
    eng = fastlstm.Engine(spec.validate())
    with pytest.raises(InputError, match=r"10 at position \(2,\) is outside the vocabulary \[0, 10\)"):
        eng.run(np.array([1, 2, 10, -1]))
    rows, squeeze = eng._sequence_input(np.array([1, 2, 9, 0]), False)
    assert squeeze and rows.shape == (4, 1, 5)
    np.testing.assert_array_equal(rows[:, 0], spec.pre[0].table[[1, 2, 9, 0]])


# ------------------------------------------------------------------------------------ the engine


def token_model(V=30, num_layers=2, post=None, num_directions=1):
    spec = random_spec(6, 10, num_layers=num_layers, num_directions=num_directions, seed=3)
    spec.pre = [Embedding(rng.normal(0, 1, (V, 6)))]
    spec.post = post if post is not None else [linear(V, 10 * num_directions, "log_softmax")]
    return spec.validate()


@pytest.mark.parametrize("post", ["per_step", "select_last", "final_state", "none"])
def test_engine_token_model_against_reference(post):
    D = 2 if post == "final_state" else 1
    layers = {"per_step": [linear(30, 10, "log_softmax")],
              "select_last": [SelectLast(10), linear(3, 10, "relu"), linear(2, 3, "softmax")],
              "final_state": [SelectLast(20, state=True), linear(2, 20, "sigmoid")], "none": []}[post]
    spec = token_model(post=layers, num_directions=D)
    eng = fastlstm.Engine(spec)
    x = rng.integers(0, 30, (9, 8))
    lens = rng.integers(0, 10, 8)
    y, _ = eng.run(x, sequence_lens=lens)
    ref = reference_model(spec, x, lens)
    if not spec.selects_last:  # past each length the LSTM's rows are zero: compare the valid steps
        mask = np.arange(9)[:, None] < lens[None, :]
        y, ref = y[mask], ref[mask]
    assert rel_error(y, ref) <= TOL
    yb, _ = eng.run(x.T, sequence_lens=lens, batch_first=True)  # (B, T) in, (B, T, C) / (B, C) out
    y_full, _ = eng.run(x, sequence_lens=lens)
    assert np.array_equal(yb, y_full if spec.selects_last else y_full.transpose(1, 0, 2))


def test_step_equals_run_bit_for_bit():
    spec = token_model(post=[LayerNorm(np.ones(10), np.zeros(10)), linear(30, 10, "softmax")])
    eng = fastlstm.Engine(spec)
    x = rng.integers(0, 30, (7, 3))
    y, _ = eng.run(x)
    st = eng.new_state(3)
    assert np.array_equal(np.stack([eng.step(x[t], st) for t in range(7)]), y)  # batched, checked path
    eng.reset()
    assert np.array_equal(np.stack([eng.step(int(t)) for t in x[:, 1]]), y[:, 1])  # one call per token
    st = eng.new_state(1)
    assert np.array_equal(eng.step_chunk(x[:, 2:3], st), y[:, 2:3])


def test_feature_model_with_dense_input_layer():
    spec = random_spec(7, 10, seed=4)
    spec.pre = [linear(7, 5, "tanh"), LayerNorm(rng.normal(1, 0.1, 7), rng.normal(0, 0.1, 7))]
    spec.post = [SelectLast(10), linear(4, 10, "log_softmax")]
    eng = fastlstm.Engine(spec.validate())
    x = rng.normal(0, 1, (6, 2, 5)).astype(np.float32)
    y, _ = eng.run(x)
    assert y.shape == (2, 4) and rel_error(y, reference_model(spec, x)) <= TOL
    assert eng.run(x[:, 0])[0].shape == (4,)  # (T, F): one sequence, (C,) out
    eng.reset()
    for t in range(6):
        y_t = eng.step(x[t, 1])
    assert np.array_equal(y_t, y[1])


@pytest.mark.parametrize("bad,message", [
    (np.array([[1, 2], [3, 30]]), r"30 at position \(1, 1\) is outside the vocabulary \[0, 30\)"),
    ([4, -1, 99], r"-1 at position \(1,\) is outside"),
    ([1.0, 2.5], r"2\.5 at position \(1,\) is not an integer"),
    ([1.0, float("nan")], r"nan at position \(1,\) is not an integer"),
    (np.array([True, False]), "expected integers, found bool"),
    (["a", "b"], "expected integers"),
])
def test_bad_token_ids(bad, message):
    eng = fastlstm.Engine(token_model())
    with pytest.raises(InputError, match=message):
        eng.run(bad)


@pytest.mark.parametrize("bad,message", [(30, "30 at position"), (-2, "-2 at position"), (3.5, "not an integer"),
                                         (True, "found bool"), ([[1]], r"expected a token id or \(B,\)")])
def test_bad_token_id_in_step(bad, message):
    eng = fastlstm.Engine(token_model())
    before = eng.default_state.h.copy()
    with pytest.raises(InputError, match=message):
        eng.step(bad)
    assert np.array_equal(eng.default_state.h, before)  # nothing advanced


def test_integral_float_ids_are_accepted():
    """Keras-style models take float ids; whole numbers are fine."""
    eng = fastlstm.Engine(token_model())
    ids = np.array([[1, 2], [3, 4]])
    assert np.array_equal(eng.run(ids.astype(np.float32))[0], eng.run(ids)[0])


# ------------------------------------------------------------------------------------------- the spec


@pytest.mark.parametrize("pre,post,message", [
    ([linear(4, 3)], [], "gives 4 features, the LSTM takes 6"),
    ([], [linear(2, 11)], r"post\[0\]: takes 11 features, the LSTM gives 10"),
    ([Linear(np.ones((6, 6)), None), Embedding(np.ones((5, 6)))], [], "an Embedding can only be the first"),
    ([], [linear(10, 10), SelectLast(10)], "SelectLast can only be the first"),
    ([], [Linear(np.ones((3, 10)), np.ones(4))], r"bias: expected shape \(3,\)"),
    ([], [Linear(np.ones((3, 10), np.int32), None)], "floating point"),
    ([], [Activation("gelu", 10)], "unknown activation 'gelu'"),
    ([], [LayerNorm(np.ones(10), np.ones(10), eps=0.0)], "eps must be a positive number"),
    ([Embedding(np.ones((0, 6)))], [], "non-empty 2-D"),
])
def test_spec_refuses_inconsistent_layers(pre, post, message):
    spec = random_spec(6, 10)
    spec.pre, spec.post = pre, post
    with pytest.raises(SpecError, match=message):
        spec.validate()


# ------------------------------------------------------------------------------------------- the file


def test_file_round_trip_and_info(tmp_path, capsys):
    spec = token_model(post=[SelectLast(10), LayerNorm(rng.normal(1, 0.1, 10), np.zeros(10), 1e-3),
                             linear(5, 10, "sigmoid", bias=False)])
    path = tmp_path / "m.fastlstm"
    fastlstm.save(spec, path)
    eng = fastlstm.load(path)
    assert [type(x).__name__ for x in eng.spec.post] == ["SelectLast", "LayerNorm", "Linear"]
    x = rng.integers(0, 30, (5, 2))
    assert np.array_equal(eng.run(x)[0], fastlstm.Engine(spec).run(x)[0])
    meta = json.loads(_header(path.read_bytes())["__metadata__"]["fastlstm"])
    assert meta["format_version"] == 2 and meta["pre"][0] == {"kind": "embedding", "vocab": 30, "dim": 6}
    from fastlstm.cli import main

    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "before      Embedding(vocab 30, dim 6)  [table (30, 6)]" in out
    assert "after       Linear(10 -> 5, no bias) + sigmoid  [weight (5, 10)]" in out


def test_bare_lstm_files_are_version_2_and_version_1_is_read(tmp_path):
    """A model without layers is written as version 2 with empty layer lists (and its weight type); the
    same file rewritten as version 1 (no "weights", no layers: what older fastlstm wrote) reads the same."""
    path = tmp_path / "bare.fastlstm"
    spec = random_spec(3, 4)
    fastlstm.save(spec, path)
    data = path.read_bytes()
    meta = json.loads(_header(data)["__metadata__"]["fastlstm"])
    assert meta["format_version"] == 2 and meta["pre"] == [] and meta["post"] == [] and meta["weights"] == "fp32"

    def as_version_1(header, meta):
        meta["format_version"] = 1
        for key in ("weights", "pre", "post"):
            del meta[key]

    old = parse_spec(_rewrite(data, as_version_1))
    assert old.pre == [] and old.post == [] and old.weights == "fp32"
    x = rng.normal(0, 1, (4, 3)).astype(np.float32)
    assert np.array_equal(fastlstm.Engine(old).run(x)[0], fastlstm.Engine(spec).run(x)[0])
    assert type(fastlstm.Engine(old)) is fastlstm.Engine  # a bare LSTM's engine: no layer stages


def _header(data: bytes) -> dict:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n])


def _rewrite(data: bytes, edit) -> bytes:
    header = _header(data)
    meta = json.loads(header["__metadata__"]["fastlstm"])
    edit(header, meta)
    header["__metadata__"]["fastlstm"] = json.dumps(meta)
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data[8 + struct.unpack("<Q", data[:8])[0]:]


@pytest.mark.parametrize("edit,message", [
    (lambda h, m: m["post"][0].update(out=6), r"post\.0\.weight has shape \[5, 10\], metadata implies \[6, 10\]"),
    (lambda h, m: m["pre"][0].update(vocab=2**40), r"vocab=1099511627776 is not an integer in \[1, 16777216\]"),
    (lambda h, m: m["post"][0].update(kind="conv"), "unknown layer kind 'conv'"),
    (lambda h, m: m["post"][0].update(activation="swish"), "unknown activation 'swish'"),
    (lambda h, m: m["post"][0].update(bias=False), r"unexpected \['post\.0\.bias'\]"),
    (lambda h, m: h.pop("pre.0.table"), r"missing \['pre\.0\.table'\]"),
    (lambda h, m: m.update(post="linear"), "must be a list"),
    (lambda h, m: h["post.0.weight"].update(dtype="F16"), "dtype 'F16'"),
    (lambda h, m: m.update(pre=[]), r"unexpected \['pre\.0\.table'\]"),
])
def test_lying_files_with_layers(edit, message, tmp_path):
    fastlstm.save(token_model(post=[linear(5, 10)]), tmp_path / "m.fastlstm")
    with pytest.raises(FormatError, match=message):
        parse_spec(_rewrite((tmp_path / "m.fastlstm").read_bytes(), edit))
