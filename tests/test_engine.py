"""Engine against the float64 NumPy reference: shapes, modes, state semantics, cell surface."""

from __future__ import annotations

import numpy as np
import pytest
from reference import reference_run
from specs import random_spec, rel_error

import fastlstm
from fastlstm import CellOptions, InputError

TOL = 2e-5


def _inputs(spec, T=9, B=3, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (T, B, spec.input_size)).astype(np.float32)


SURFACE = {
    "plain": dict(),
    "big_hidden_tail_block": dict(hidden_size=37),
    "hidden_1": dict(hidden_size=1),
    "two_layers": dict(num_layers=2),
    "three_layers_bidir": dict(num_layers=3, num_directions=2),
    "bidirectional": dict(num_directions=2),
    "reverse": dict(reverse=True),
    "projection": dict(hidden_size=16, proj_size=5),
    "projection_bidir_2layer": dict(hidden_size=16, proj_size=5, num_layers=2, num_directions=2),
    "peephole": dict(peephole=True),
    "clip": dict(options=CellOptions.make(clip=0.5)),
    "input_forget": dict(options=CellOptions.make(input_forget=True)),
    "peephole_clip_forget": dict(peephole=True, options=CellOptions.make(clip=1.1, input_forget=True)),
}


@pytest.mark.parametrize("name", SURFACE)
def test_run_matches_reference(name):
    spec = random_spec(**SURFACE[name], seed=hash(name) % 1000)
    x = _inputs(spec)
    rng = np.random.default_rng(5)
    eng = fastlstm.Engine(spec)
    st = eng.new_state(3)
    st.h[...] = rng.normal(0, 0.5, st.h.shape)
    st.c[...] = rng.normal(0, 0.5, st.c.shape)
    y, final = eng.run(x, st)
    y_ref, h_ref, c_ref = reference_run(spec, x, st.h, st.c)
    assert y.shape == (9, 3, spec.num_directions * spec.output_size) and y.dtype == np.float32
    assert rel_error(y, y_ref) < TOL
    assert rel_error(final.h, h_ref) < TOL
    assert rel_error(final.c, c_ref) < TOL


ACTIVATION_SETS = [
    ("Sigmoid", "Tanh", "Tanh"),
    ("HardSigmoid", "Relu", "Softsign"),
    ("Sigmoid", "LeakyRelu", "ThresholdedRelu"),
    ("HardSigmoid", "ScaledTanh", "Elu"),
    ("Sigmoid", "Softplus", "Affine"),
    ("Sigmoid", "Tanh", "Relu"),
]


@pytest.mark.parametrize("acts", ACTIVATION_SETS, ids="-".join)
@pytest.mark.parametrize("custom_params", [False, True])
def test_activations_match_reference(acts, custom_params):
    alphas = [0.3, 0.7, 1.3] if custom_params else None
    betas = [0.2, 0.4, 0.6] if custom_params else None
    # ONNX consumes alpha/beta only for activations that take them: pass just enough.
    from fastlstm.spec import ACTIVATIONS

    if custom_params:
        alphas = alphas[: sum(ACTIVATIONS[a][0] is not None for a in acts)]
        betas = betas[: sum(ACTIVATIONS[a][1] is not None for a in acts)]
    options = CellOptions.make(acts, alphas, betas)
    spec = random_spec(options=options, seed=3)
    x = _inputs(spec)
    y, final = fastlstm.Engine(spec).run(x)
    y_ref, h_ref, c_ref = reference_run(spec, x)
    assert rel_error(y, y_ref) < TOL
    assert rel_error(final.c, c_ref) < TOL


@pytest.mark.parametrize("directions", [1, 2])
def test_sequence_lens(directions):
    spec = random_spec(num_layers=2, num_directions=directions, seed=11)
    x = _inputs(spec, T=6, B=4)
    lens = np.array([6, 3, 1, 0])
    y, final = fastlstm.Engine(spec).run(x, sequence_lens=lens)
    y_ref, h_ref, c_ref = reference_run(spec, x, sequence_lens=lens)
    assert rel_error(y, y_ref) < TOL
    assert rel_error(final.h, h_ref) < TOL and rel_error(final.c, c_ref) < TOL
    assert not y[3:, 1].any() and not y[:, 3].any()


def test_step_over_sequence_equals_run():
    spec = random_spec(input_size=5, hidden_size=40, num_layers=2, proj_size=0, seed=4)
    eng = fastlstm.Engine(spec)
    x = _inputs(spec, T=20, B=1)[:, 0]
    y_run, final = eng.run(x)
    ys = np.stack([eng.step(x[t]) for t in range(20)])
    assert ys.shape == (20, 40)
    assert np.max(np.abs(ys - y_run)) <= 1e-6
    np.testing.assert_allclose(eng.default_state.h, final.h, atol=1e-6)
    eng.reset()
    assert not eng.default_state.h.any() and not eng.default_state.c.any()
    assert np.max(np.abs(eng.step(x[0]) - y_run[0])) <= 1e-6


def test_step_batched_explicit_state_equals_run():
    spec = random_spec(hidden_size=20, proj_size=6, num_layers=2, seed=8)
    eng = fastlstm.Engine(spec)
    x = _inputs(spec, T=7, B=4)
    y_run, final = eng.run(x)
    st = eng.new_state(4)
    ys = np.stack([eng.step(x[t], st) for t in range(7)])
    assert ys.shape == (7, 4, 6)
    assert np.max(np.abs(ys - y_run)) <= 1e-6
    assert np.max(np.abs(st.h - final.h)) <= 1e-6 and np.max(np.abs(st.c - final.c)) <= 1e-6


def test_run_does_not_modify_state_passed_in():
    spec = random_spec(seed=2)
    eng = fastlstm.Engine(spec)
    st = eng.new_state(3)
    st.h[...] = 0.25
    before_h, before_c = st.h.copy(), st.c.copy()
    _, final = eng.run(_inputs(spec), st)
    assert np.array_equal(st.h, before_h) and np.array_equal(st.c, before_c)
    assert final is not st and not np.array_equal(final.h, st.h)


def test_two_dim_input_and_batch_first():
    spec = random_spec(num_directions=2, seed=6)
    eng = fastlstm.Engine(spec)
    x = _inputs(spec, T=5, B=2)
    y_tm, _ = eng.run(x)
    y_bf, _ = eng.run(np.ascontiguousarray(x.transpose(1, 0, 2)), batch_first=True)
    assert y_bf.shape == (2, 5, 2 * spec.output_size)
    np.testing.assert_array_equal(y_bf, y_tm.transpose(1, 0, 2))
    y_2d_bf, _ = eng.run(x[:, 0], batch_first=True)  # a 2-D input has no batch axis to move
    assert y_2d_bf.shape == (5, 2 * spec.output_size)
    y_2d, st = eng.run(x[:, 0])
    assert y_2d.shape == (5, 2 * spec.output_size) and st.h.shape == (1, 2, 1, spec.output_size)
    np.testing.assert_allclose(y_2d, y_tm[:, 0], atol=1e-6)


def test_other_float_dtypes_are_cast():
    spec = random_spec(seed=9)
    eng = fastlstm.Engine(spec)
    x = _inputs(spec)
    y32, _ = eng.run(x)
    y64, _ = eng.run(x.astype(np.float64))
    y16, _ = eng.run(x.astype(np.float16))
    assert y64.dtype == np.float32
    np.testing.assert_array_equal(y32, y64)
    assert rel_error(y16, y32) < 1e-2


def test_step_refuses_reverse_and_bidirectional():
    for kwargs in (dict(num_directions=2), dict(reverse=True)):
        eng = fastlstm.Engine(random_spec(**kwargs))
        with pytest.raises(InputError, match="reverse"):
            eng.step(np.zeros(7, np.float32))


@pytest.mark.parametrize("bad", [
    np.zeros((4, 3, 8), np.float32),  # wrong input size
    np.zeros((4,), np.float32),  # ndim 1
    np.zeros((2, 2, 2, 7), np.float32),  # ndim 4
    np.zeros((0, 1, 7), np.float32),  # empty sequence
    np.zeros((4, 1, 7), np.int32),  # not floating
])
def test_run_rejects_bad_input(bad):
    with pytest.raises(InputError):
        fastlstm.Engine(random_spec()).run(bad)


def test_bad_state_and_lens_rejected():
    eng = fastlstm.Engine(random_spec(num_layers=2))
    x = np.zeros((4, 2, 7), np.float32)
    with pytest.raises(InputError, match="state"):
        eng.run(x, eng.new_state(3))
    with pytest.raises(InputError, match="State"):
        eng.run(x, (np.zeros(1), np.zeros(1)))
    with pytest.raises(InputError, match="sequence_lens"):
        eng.run(x, sequence_lens=[4, 5])
    with pytest.raises(InputError, match="sequence_lens"):
        eng.run(x, sequence_lens=[4])
    with pytest.raises(InputError, match="sequence_lens"):
        eng.run(x, sequence_lens=[-1, 2])
    with pytest.raises(InputError):
        eng.step(np.zeros((2, 7), np.float32))  # default stream has batch 1
    with pytest.raises(InputError):
        eng.new_state(0)


def test_save_load_round_trip(tmp_path):
    spec = random_spec(num_layers=2, num_directions=2, hidden_size=10, proj_size=4, peephole=True,
                       options=CellOptions.make(("HardSigmoid", "Tanh", "Elu"), [0.3, 0.9], [0.4], clip=2.0))
    spec.source = {"format": "test"}
    path = tmp_path / "m.fastlstm"
    fastlstm.save(spec, path)
    eng = fastlstm.load(path)
    back = eng.spec
    assert back.source == {"format": "test"}
    for l in range(2):
        for d in range(2):
            a, b = spec.layers[l][d], back.layers[l][d]
            for name in ("W", "R", "b", "peephole", "proj"):
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
            assert a.options == b.options and a.reverse == b.reverse
    x = _inputs(spec)
    np.testing.assert_array_equal(eng.run(x)[0], fastlstm.Engine(spec).run(x)[0])
