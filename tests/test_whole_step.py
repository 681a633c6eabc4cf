"""The whole-model step as one kernel call (kernels/entry.model_step): against run() bit for bit and the float64
reference, for every kind of model around every kind of LSTM (projection, general cell, 2 layers, int8 / fp16
weights), with 1 and 2 threads; the State's layer scratch (own, derived, foreign, snapshots); out=; the
variant marker that keeps the layers' code out of a bare LSTM's kernel.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import reference_model
from specs import random_spec, rel_error
from test_kernels import team_always  # noqa: F401 (a fixture)

import fastlstm
from fastlstm import InputError
from fastlstm.layers import Activation, Embedding, LayerNorm, Linear, SelectLast
from fastlstm.quantize import quantize
from fastlstm.spec import CellOptions
from fastlstm.stages import ModelEngine
from fastlstm.state import State

TOL = 2e-5
rng = np.random.default_rng(11)


def linear(n_out, n_in, act="none", bias=True):
    return Linear(rng.normal(0, 0.5, (n_out, n_in)), rng.normal(0, 0.3, n_out) if bias else None, act)


def model(kind: str, I=6, H=10, L=2, P=0, general=False, V=40):
    """A whole model around a random LSTM: tokens or features in, one of a few heads out."""
    options = CellOptions.make(clip=2.5) if general else None
    spec = random_spec(I, H, L, 1, P, peephole=general, options=options, seed=L + P + general)
    Hout = P or H
    if kind == "lm":  # Embedding -> LSTM -> LayerNorm -> Linear + log_softmax
        spec.pre = [Embedding(rng.normal(0, 1, (V, I)))]
        spec.post = [LayerNorm(rng.normal(1, 0.1, Hout), rng.normal(0, 0.1, Hout)), linear(V, Hout, "log_softmax")]
    elif kind == "deep_in":  # Embedding -> Linear + tanh -> LSTM -> Linear -> Activation(softmax)
        spec.pre = [Embedding(rng.normal(0, 1, (V, 9))), linear(I, 9, "tanh")]
        spec.post = [linear(7, Hout), Activation("softmax", 7)]
    elif kind == "frames":  # features: Linear + relu -> LayerNorm -> LSTM -> Linear + sigmoid
        spec.pre = [linear(I, 5, "relu"), LayerNorm(rng.normal(1, 0.1, I), rng.normal(0, 0.1, I))]
        spec.post = [linear(3, Hout, "sigmoid")]
    elif kind == "classifier":  # Embedding -> LSTM -> last step -> Linear (run: (B, C); step: per step)
        spec.pre = [Embedding(rng.normal(0, 1, (V, I)))]
        spec.post = [SelectLast(Hout), linear(2, Hout)]
    elif kind == "embed_only":  # Embedding -> LSTM (the LSTM's output per step)
        spec.pre = [Embedding(rng.normal(0, 1, (V, I)))]
    elif kind == "head_only":  # features -> LSTM -> Linear
        spec.post = [linear(33, Hout, "tanh")]
    elif kind == "big_head":  # features -> LSTM -> a Linear big enough to be a phase of the step's task -> Linear
        wide_in = Linear(rng.normal(0, 1 / np.sqrt(V), (5, V)), rng.normal(0, 0.3, 5))  # (a trained layer's scale:
        spec.post = [linear(V, Hout, "relu"), wide_in, Activation("softmax", 5)]  # float32 sums of V terms stay exact)
    return spec.validate()


def inputs(spec, T, B):
    if spec.vocab_size is not None:
        return rng.integers(0, spec.vocab_size, (T, B))
    return rng.normal(0, 1, (T, B, spec.in_features)).astype(np.float32)


def steps(eng, x, state):
    return np.stack([eng.step(x[t], state) for t in range(x.shape[0])])


CASES = [  # kind, LSTM sizes
    ("lm", {}), ("lm", {"P": 4}), ("lm", {"general": True, "L": 1}), ("deep_in", {"H": 33, "L": 1}),
    ("frames", {}), ("classifier", {"L": 1}), ("embed_only", {}), ("head_only", {"P": 7, "H": 17}),
    # heads of >= model.HEAD_PHASE_MIN_WORK FMAs per row: the Linear runs as the step task's last phase
    ("lm", {"V": 2800, "H": 48, "L": 1}), ("big_head", {"V": 2800, "H": 48, "P": 47}),
]


@pytest.mark.parametrize("kind,sizes", CASES, ids=[k + "".join(f"-{a}{b}" for a, b in s.items()) for k, s in CASES])
def test_step_equals_run_and_reference(kind, sizes):
    """step() over a sequence (one kernel call per step, batch 3 and one stream) = run() bit for bit (run's
    per-step head: step_chunk for a model that selects the last step), and both match float64."""
    spec = model(kind, **sizes)
    eng = fastlstm.Engine(spec)
    assert type(eng) is ModelEngine and eng.plan.variant.ndim == (4 if sizes.get("general") else 3)
    x = inputs(spec, 6, 3)
    y = eng.step_chunk(x, eng.new_state(3))  # the head on every step, through run()'s kernels
    assert np.array_equal(steps(eng, x, eng.new_state(3)), y)
    one = eng.new_state(1)
    for t in range(6):  # one stream: a Python int / a (F,) frame
        y_t = eng.step(int(x[t, 1]) if spec.vocab_size else x[t, 1], one)
        assert np.array_equal(y_t, y[t, 1])
    ref = reference_model(spec, x)
    if spec.selects_last:
        spec.post = spec.post[1:]  # the reference of the per-step head
        ref_steps = reference_model(spec, x)
        assert rel_error(eng.run(x)[0], ref) <= TOL
        ref = ref_steps
    assert rel_error(y, ref) <= TOL


@pytest.mark.parametrize("kind", ["lm", "frames"])
def test_quantized_lstm_with_fp32_head(kind):
    """int8 / fp16 W and R (the LSTM's; the layers around stay fp32): step == run bit for bit, and the model
    gives the fp32 model's numbers on the dequantized weights: fp16 widens exactly (the same bits), int8 scales
    each summation piece's sum instead of each weight (float32 rounding apart)."""
    x = inputs(model(kind), 5, 2)
    for weights in ("int8", "fp16"):
        spec = model(kind)
        q = quantize(spec, weights)
        eng = fastlstm.Engine(q)
        assert eng.plan.weights == weights and q.post[-1].weight.dtype == np.float32
        y = eng.step_chunk(x, eng.new_state(2))
        assert np.array_equal(steps(eng, x, eng.new_state(2)), y)
        for l, layer in enumerate(q.layers):  # the same model with the dequantized weights as fp32
            spec.layers[l][0].W, spec.layers[l][0].R = layer[0].W.dequantize(), layer[0].R.dequantize()
        fp32 = fastlstm.Engine(spec.validate())
        y_fp32 = fp32.step_chunk(x, fp32.new_state(2))
        if weights == "int8":
            assert rel_error(y, y_fp32) <= 2e-6
        else:
            assert np.array_equal(y, y_fp32)


@pytest.mark.parametrize("kind,V", [("lm", 40), ("frames", 40), ("lm", 2800), ("big_head", 2800)])
def test_threads_1_and_2_identical(team_always, kind, V):  # noqa: F811 (the fixture)
    """The LSTM part of the step on a team of 2 (and a big head's first Linear, split by output blocks; the
    other layers on the calling thread): the same bits as alone."""
    from fastlstm.kernels.model import HEAD_PHASE_MIN_WORK

    spec = model(kind, H=48, V=V)
    assert (V * 48 >= HEAD_PHASE_MIN_WORK) == (V == 2800)
    eng = fastlstm.Engine(spec)
    x = inputs(spec, 7, 4)
    got = {}
    for threads in sorted({1, team_always}):
        fastlstm.set_num_threads(threads)
        got[threads] = (steps(eng, x, eng.new_state(4)), eng.run(x)[0])
    for a, b in zip(got[1], got[team_always], strict=True):
        np.testing.assert_array_equal(a, b)


def test_states_with_and_without_the_layer_scratch():
    """A State this engine made holds the layers' scratch (and token ids); derived States keep it; a State
    without it (State(h, c), a snapshot, a bare LSTM engine's) steps to the same bits, its scratch allocated
    by the kernel."""
    spec = model("lm", L=1)
    eng = fastlstm.Engine(spec)
    bare = fastlstm.Engine(random_spec(6, 10, seed=1))  # the same LSTM shape, no layers
    x = inputs(spec, 4, 2)
    own = eng.new_state(2)
    assert own._extra == eng.plan.step_floats > 0 and own._ids.shape == (2,)
    assert bare.new_state(2)._extra == 0 and bare.new_state(2)._ids is None
    want = steps(eng, x, own)
    for make in (lambda: State(np.zeros((1, 1, 2, 10), np.float32), np.zeros((1, 1, 2, 10), np.float32)),
                 lambda: State.from_bytes(eng.new_state(2).to_bytes()), lambda: bare.new_state(2)):
        st = make()
        assert st._extra == 0
        assert np.array_equal(steps(eng, x, st), want)
        assert np.array_equal(st.h, own.h) and np.array_equal(st.c, own.c)
    derived = [own.copy(), own.select([1, 0]), State.concat([own.select(0), own.select(1)]), own.drop(0)]
    assert all(s._extra == own._extra and s._ids is not None for s in derived)
    assert not np.shares_memory(derived[0]._ids, own._ids)
    frame = np.ones(6, np.float32)  # and a bare engine steps a whole model's State (h and c are the LSTM's)
    assert np.array_equal(bare.step(frame, eng.new_state(1)), bare.step(frame, bare.new_state(1)))


def test_token_ids_in_the_step():
    """int and np.int64 ids, (B,) int64 arrays, other integer arrays (checked path): one result; bad ids
    name themselves and advance nothing."""
    eng = fastlstm.Engine(model("lm", L=1))
    a, b, c = eng.new_state(1), eng.new_state(1), eng.new_state(1)
    for token in (3, 7, 0, 39):
        ya, yb, yc = eng.step(token, a), eng.step(np.int64(token), b), eng.step(np.array([token], np.int32), c)
        assert np.array_equal(ya, yb) and np.array_equal(ya, yc[0]) and yc.shape == (1, 40)
    before = a.h.copy()
    for bad, message in ((40, "40 at position"), (-1, "-1 at position"), (2**70, "outside the vocabulary"),
                         (np.array([1, 40]), r"40 at position \(1,\)")):
        with pytest.raises(InputError, match=message):
            eng.step(bad, a if np.ndim(bad) == 0 else eng.new_state(2))
    assert np.array_equal(a.h, before)


def test_out_is_written():
    """out= (the head's width) is filled and returned; a wrong one is refused by name."""
    eng = fastlstm.Engine(model("lm", L=1))
    out = np.full(40, np.nan, np.float32)
    assert eng.step(5, eng.new_state(), out=out) is out and np.isfinite(out).all()
    batch = np.empty((2, 40), np.float32)
    assert eng.step(np.array([5, 6]), eng.new_state(2), out=batch) is batch
    np.testing.assert_array_equal(batch[0], out)
    with pytest.raises(InputError, match="out: expected a writable C-contiguous float32 array of 40 elements"):
        eng.step(5, eng.new_state(), out=np.empty(10, np.float32))


def test_bare_lstm_engine_is_unchanged():
    """A spec without layers gets the plain Engine, marker ndim 1 (2 for the general cell), no layer scratch."""
    for general in (False, True):
        spec = random_spec(4, 8, peephole=general, seed=3)
        eng = fastlstm.Engine(spec)
        assert type(eng) is fastlstm.Engine and eng.plan.variant.ndim == 1 + general
        assert eng.plan.step_floats == 0 and eng.new_state()._extra == 0
        assert eng.vocab_size is None and eng.in_features == 4 and eng.out_features == 8
