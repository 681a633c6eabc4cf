"""Engine input validation (issue #6): bad x, state, sequence_lens and step() on a bidirectional model
are refused with an InputError before any kernel runs; NaN and Inf inputs propagate without a crash.
(tests/test_engine.py covers the basic cases; this file covers the rest.)"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from specs import random_spec

import fastlstm
from fastlstm import FastLSTMError, InputError, State

I, H = 7, 12


@pytest.fixture(scope="module")
def eng():
    return fastlstm.Engine(random_spec(I, H, num_layers=2))


@pytest.fixture(scope="module")
def bidir():
    return fastlstm.Engine(random_spec(I, H, num_directions=2))


def refused(fn, match: str, *args, **kwargs) -> InputError:
    with pytest.raises(InputError, match=match) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, FastLSTMError)
    return info.value


# ---------------------------------------------------------------------------------------- x


@pytest.mark.parametrize("x,match", [
    (np.zeros((4, 3, I + 1), np.float32), "input size 7"),
    (np.zeros((4, 3, I - 1), np.float32), "input size 7"),
    (np.zeros(I, np.float32), "ndim=1"),
    (np.float32(1.0), "ndim=0"),
    (np.zeros((2, 2, 2, I), np.float32), "ndim=4"),
    (np.zeros((0, 1, I), np.float32), "sequence length and batch must be >= 1"),
    (np.zeros((3, 0, I), np.float32), "sequence length and batch must be >= 1"),
    (np.zeros((4, I), np.int32), "floating point.*int32"),
    (np.zeros((4, I), bool), "floating point.*bool"),
    (np.zeros((4, I), np.complex64), "floating point.*complex64"),
    (np.array([["a"] * I] * 4), "floating point"),
    (np.zeros((4, I), object), "floating point.*object"),
    ([[0.0] * I, [0.0] * (I - 1)], "x: expected an array|floating point"),  # ragged
    (None, "ndim=0"),
])
def test_run_refuses_bad_x(eng, x, match):
    refused(eng.run, match, x)


def test_run_batch_first_wrong_axis(eng):
    refused(eng.run, "input size", np.zeros((2, I, 4), np.float32), batch_first=True)


@pytest.mark.parametrize("x,match", [
    (np.zeros(I + 1, np.float32), r"x_t: expected shape \(7,\) or \(B, 7\), found \(8,\)"),
    (np.zeros((1, 1, I), np.float32), r"found \(1, 1, 7\)"),
    (np.float32(0.0), r"found \(1, 1\)|found \(\)"),
    (np.zeros(I, np.int64), "floating point.*int64"),
    (np.zeros(I, np.complex128), "floating point"),
    ([[0.0] * I, [0.0]], "x_t: expected an array|x_t"),
    ("abc", "x_t"),
])
def test_step_refuses_bad_x(eng, x, match):
    st = eng.new_state(1)
    before = st.h.copy(), st.c.copy()
    refused(eng.step, match, x, st)
    np.testing.assert_array_equal(st.h, before[0])  # refused before anything ran
    np.testing.assert_array_equal(st.c, before[1])


# ------------------------------------------------------------------------------------ state


def _foreign_states(eng):
    """States that do not belong to `eng` (2 layers, H=12, batch 1), each with what should be named."""
    L, D = eng.num_layers, eng.num_directions
    f32 = np.float32
    other_h = fastlstm.Engine(random_spec(I, H + 4, num_layers=2)).new_state(1)
    other_l = fastlstm.Engine(random_spec(I, H, num_layers=1)).new_state(1)
    return {
        "other hidden size": (other_h, r"state.*\.h: expected float32 array of shape \(2, 1, 1, 12\)"),
        "other layer count": (other_l, r"\.h: expected float32 array of shape \(2, 1, 1, 12\)"),
        "c wrong": (State(np.zeros((L, D, 1, H), f32), np.zeros((L, D, 1, H + 1), f32)), r"\.c: expected"),
        "a tuple": ((np.zeros((L, D, 1, H), f32),) * 2, "must be a fastlstm State.*tuple"),
        "batch 3": (eng.new_state(3), r"shape \(2, 1, 1, 12\)"),
    }


@pytest.mark.parametrize("h,c,match", [
    (np.zeros((2, 1, 1, 12)), np.zeros((2, 1, 1, 12), np.float32), r"h must be float32, got float64"),
    ([0.0] * 12, np.zeros((2, 1, 1, 12), np.float32), r"h must be a float32 numpy array, got list"),
    (np.zeros((2, 1, 12), np.float32), np.zeros((2, 1, 1, 12), np.float32), r"h must have shape \(layers"),
    (np.zeros((2, 1, 1, 12), np.float32), np.zeros((2, 1, 2, 12), np.float32), r"must agree"),
    (np.zeros((2, 3, 1, 12), np.float32), np.zeros((2, 3, 1, 12), np.float32), r"h must have shape"),
])
def test_state_refuses_bad_arrays(h, c, match):
    """State(h, c) copies h and c into its own buffer: anything that is not a (L, D, B, n) float32 array
    pair is refused when the State is made."""
    with pytest.raises(InputError, match=match):
        State(h, c)


def test_state_copies_strided_arrays():
    h = np.arange(2 * 24, dtype=np.float32).reshape(2, 1, 1, 24)[..., ::2]
    st = State(h, np.zeros((2, 1, 1, 12), np.float32))
    assert st.h.flags.c_contiguous and st.h.flags.writeable
    np.testing.assert_array_equal(st.h, h)
    with pytest.raises(AttributeError):
        st.h = np.zeros((2, 1, 1, 12), np.float32)  # views of the state's buffer: not rebindable


@pytest.mark.parametrize("case", ["other hidden size", "other layer count", "c wrong", "a tuple", "batch 3"])
def test_step_refuses_foreign_state(eng, case):
    """A State of another model used to reach the kernels, which index h and c without bounds checks."""
    state, match = _foreign_states(eng)[case]
    refused(eng.step, match, np.zeros(I, np.float32), state)


@pytest.mark.parametrize("case", ["other hidden size", "other layer count", "c wrong", "a tuple"])
def test_run_refuses_foreign_state(eng, case):
    state, match = _foreign_states(eng)[case]
    refused(eng.run, match, np.zeros((3, I), np.float32), state)


def test_state_arrays_cannot_be_swapped(eng):
    """h and c are views of the state's buffer: rebinding them is refused, so a step never reads a stale
    or foreign array behind a State that looks right."""
    st = eng.new_state(1)
    eng.step(np.ones(I, np.float32), st)
    with pytest.raises(AttributeError):
        st.h = np.zeros((2, 1, 1, H + 1), np.float32)
    with pytest.raises(AttributeError):
        st.c = np.zeros((2, 1, 1, H), np.float32)


def test_flat_batch_frame_is_not_a_batch_step(eng):
    """A (B*I,) vector with a batch-B state is not a batch of frames (x_t is (I,) or (B, I))."""
    st = eng.new_state(3)
    refused(eng.step, r"expected shape \(7,\) or \(B, 7\), found \(21,\)|batch must match",
            np.zeros(3 * I, np.float32), st)


@pytest.mark.parametrize("form", ["read-only", "strided", "float64", "list", "2-d batch of one"])
def test_every_frame_form_gives_the_fast_path_result(eng, form):
    """step()'s one-call path takes only float32 contiguous (I,) frames; every other form goes through
    the checked path and must give the same numbers."""
    x = np.random.default_rng(5).normal(size=I).astype(np.float32)
    st_fast, st_other = eng.new_state(1), eng.new_state(1)
    if form == "read-only":
        other = x.copy()
        other.flags.writeable = False
    elif form == "strided":
        other = np.repeat(x, 2)[::2]
    elif form == "float64":
        other = x.astype(np.float64)
    elif form == "list":
        other = x.tolist()
    else:
        other = x[None, :]
    for _ in range(3):
        y_fast = eng.step(x, st_fast)
        y_other = eng.step(other, st_other)
    np.testing.assert_array_equal(y_other.reshape(-1), y_fast)
    np.testing.assert_array_equal(st_other.c, st_fast.c)


def test_equal_but_non_native_dtype_is_accepted(eng):
    """The fast check compares dtypes by identity; an equal dtype object must still pass (slow path)."""
    st = eng.new_state(1)
    st2 = State(st.h.astype(np.dtype("=f4")), st.c.astype(np.dtype("=f4")))
    x = np.ones(I, np.float32)
    np.testing.assert_array_equal(eng.step(x, st), eng.step(x, st2))


# --------------------------------------------------------------------------- sequence_lens


@pytest.mark.parametrize("lens,match", [
    ([4, 5], r"in \[0, 4\]"),
    ([-1, 2], r"in \[0, 4\]"),
    ([2**62, 1], r"in \[0, 4\]"),
    ([4], "expected 2 integers"),
    ([4, 4, 4], "expected 2 integers"),
    ([[4, 4]], "expected 2 integers"),
    (4, "expected 2 integers"),
    ([2.0, 3.0], "expected 2 integers.*float64"),
    ([True, False], "expected 2 integers.*bool"),
    (["4", "4"], "expected 2 integers"),
    ([[1], [1, 2]], "found list"),  # ragged
    (np.array([4, 4], np.uint64) + 2**63, r"in \[0, 4\]"),
])
def test_sequence_lens_out_of_range_or_wrong_length(eng, lens, match):
    refused(eng.run, f"sequence_lens: .*{match}", np.zeros((4, 2, I), np.float32), sequence_lens=lens)


def test_sequence_lens_edges_are_valid(eng):
    y, _ = eng.run(np.ones((4, 2, I), np.float32), sequence_lens=np.array([0, 4], np.int8))
    assert np.all(y[:, 0] == 0) and np.all(y[:, 1] != 0)


# ----------------------------------------------------------------------- step on bidirectional


def test_step_on_bidirectional_refused(bidir):
    for state in (None, bidir.new_state(1)):
        refused(bidir.step, "reverse directions.*use run", np.zeros(I, np.float32), state)


def test_misc_arguments(eng):
    refused(eng.new_state, "batch must be a positive integer", 0)
    refused(eng.new_state, "batch must be a positive integer", 1.5)
    refused(eng.new_state, "batch must be a positive integer", True)
    with pytest.raises(InputError, match="expects a fastlstm ModelSpec"):
        fastlstm.Engine("model.fastlstm")
    with pytest.raises(InputError, match="threads"):
        fastlstm.set_num_threads(0)


# ----------------------------------------------------------------------------- NaN and Inf


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_inputs_propagate_without_crash(bad):
    """Documented in docs/errors.md: non-finite inputs are not an error; they flow through the math.
    A NaN input poisons that stream's outputs and state until reset; +-Inf saturates the gates
    (sigmoid/tanh of +-inf are finite) unless it meets a 0 weight (inf*0 = NaN)."""
    eng = fastlstm.Engine(random_spec(I, H, num_layers=2))
    x = np.ones((5, 2, I), np.float32)
    x[2, 0, 3] = bad  # one bad value in stream 0 at t=2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        y, final = eng.run(x)
        assert y.shape == (5, 2, H)
        clean = eng.run(np.ones((5, 2, I), np.float32))[0]
        np.testing.assert_array_equal(y[:2], clean[:2])  # before the bad frame: untouched
        np.testing.assert_array_equal(y[:, 1], clean[:, 1])  # the other stream: untouched
        if np.isnan(bad):
            assert np.isnan(y[2:, 0]).all() and np.isnan(final.h[:, :, 0]).all()
        st = eng.new_state(1)
        for t in range(5):
            out = eng.step(x[t, 0], st)
        np.testing.assert_allclose(out, y[4, 0], rtol=1e-5, atol=1e-6)  # same propagation in step()
        st.zero_()  # reset clears a poisoned stream
        assert np.isfinite(eng.step(np.ones(I, np.float32), st)).all()
