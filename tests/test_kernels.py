"""Kernel-level tests: activation error bounds, packing round trip, kernels vs the float64 reference,
threads 1 vs 2, step == run, batches. (Speed lives in bench/, not here.)"""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit
from reference import reference_run
from specs import random_spec, rel_error

import fastlstm
from fastlstm.kernels.activations import TANH_SMALL, sigmoid_fast, tanh_fast
from fastlstm.kernels.config import FASTMATH
from fastlstm.kernels.pack import BLOCK, G, pack_model, pack_rows, packed_index, padded_units, unpack_rows
from fastlstm.kernels.recurrence import gates_add
from fastlstm.kernels.simd import fptr, vload_n, vstore_n

TOL = 2e-5
# Max abs error bound of tanh_fast and sigmoid_fast (float32), docs/performance.md; measured over every
# float32 by tools/fit_activations.py --check: tanh 7.66e-8, sigmoid 7.13e-8.
ACT_ABS_ERR = 1e-7


@njit(cache=False, fastmath=FASTMATH)
def _apply(xs, which):
    """The 16-lane activation over xs, 16 at a time (a short last chunk through the masked load/store),
    compiled with the kernels' own fastmath flags."""
    out = np.empty_like(xs)
    src, dst = fptr(xs), fptr(out)
    for i in range(0, xs.shape[0], 16):
        n = min(16, xs.shape[0] - i)
        v = vload_n(src, i, n)
        vstore_n(dst, i, tanh_fast(v) if which == 0 else sigmoid_fast(v), n)
    return out


def _neighbourhood(x, n=20_000):
    """The 2n + 1 float32 values nearest x (x itself in the middle)."""
    bits = np.int64(np.float32(x).view(np.int32)) + np.arange(-n, n + 1)
    return bits.astype(np.int32).view(np.float32)


def _grid():
    """A dense grid of [-30, 30], every float32 around the switch points (tanh's branch change at
    TANH_SMALL, the exp clamps, n = -126/-127 at x ~ -87.3/-87.7) and special values (zeros, tiny,
    denormals, huge)."""
    dense = np.linspace(-30, 30, 3_000_001, dtype=np.float64).astype(np.float32)
    edges = [TANH_SMALL, -TANH_SMALL, 10.0, -10.0, 87.33, -87.33, 87.68, -87.68, 88.0, -88.0, 0.5, -0.5]
    special = np.float32([0.0, -0.0, 1e-30, -1e-30, 1e-8, -1e-8, 1e-40, -1e-40, 1e-45, -1e-45, 1.1754944e-38,
                          3.4028235e38, -3.4028235e38, 1e30, -1e30, 1e3, -1e3])
    return np.concatenate([dense, special, *(_neighbourhood(e) for e in edges)])


def _sigmoid64(x):
    x = x.astype(np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def test_tanh_fast_error_bound():
    x = _grid()
    got = _apply(x, 0)
    err = np.abs(got.astype(np.float64) - np.tanh(x.astype(np.float64)))
    assert err.max() <= ACT_ABS_ERR, (err.max(), x[err.argmax()])
    assert np.all(np.abs(got) <= 1.0)
    assert np.array_equal(np.signbit(got), np.signbit(x))  # odd, tanh(-0) = -0


def test_sigmoid_fast_error_bound():
    x = _grid()
    got = _apply(x, 1)
    err = np.abs(got.astype(np.float64) - _sigmoid64(x))
    assert err.max() <= ACT_ABS_ERR, (err.max(), x[err.argmax()])
    assert np.all((got >= 0.0) & (got <= 1.0))


def test_activations_saturate_and_propagate_nan():
    x = np.float32([np.inf, -np.inf, np.nan, -np.nan, 3.4028235e38, -3.4028235e38, 0.0, -0.0])
    t, s = _apply(x, 0), _apply(x, 1)
    assert t[0] == 1.0 and t[1] == -1.0 and np.isnan(t[2]) and np.isnan(t[3])
    assert s[0] == 1.0 and s[1] == 0.0 and np.isnan(s[2]) and np.isnan(s[3])
    assert t[4] == 1.0 and t[5] == -1.0 and s[4] == 1.0 and s[5] == 0.0
    assert s[6] == 0.5 and s[7] == 0.5 and t[6] == 0.0 and t[7] == 0.0


@njit(cache=False)
def _gates_add(slabs, v, out, rows, blk0, blk1, down):
    """gates_add over plain arrays: slabs (nblk*K*G,), v (rows, K), out (n, nblk*G) updated in place."""
    n = rows.shape[0]
    orow = np.arange(n) * out.shape[1]
    dst = fptr(out)
    gates_add(fptr(slabs), 0, v.shape[1], fptr(v), rows, dst, orow, n, blk0, blk1, down, -1, (False, dst, dst, 0, 0))


@pytest.mark.parametrize("H", [1, 5, BLOCK, BLOCK + 3, 64])
def test_pack_round_trip(H):
    rng = np.random.default_rng(H)
    m = rng.normal(size=(4 * H, 7)).astype(np.float32)
    packed = pack_rows(m, H)
    assert packed.shape == (4 * padded_units(H), 7)
    np.testing.assert_array_equal(unpack_rows(packed, H), m)
    # block blk holds the 4 gates of its units next to each other
    idx = packed_index(H)
    assert len(set(idx.tolist())) == 4 * H
    gate, unit = np.divmod(np.arange(4 * H), H)
    np.testing.assert_array_equal(idx // (4 * BLOCK), unit // BLOCK)
    np.testing.assert_array_equal((idx % (4 * BLOCK)) // BLOCK, gate)


def test_packed_buffer_is_aligned_and_read_only():
    spec = random_spec(hidden_size=21, num_layers=2, num_directions=2, seed=3)
    wbuf, meta = pack_model(spec)
    assert wbuf.ctypes.data % 64 == 0 and not wbuf.flags.writeable and not meta.flags.writeable
    assert meta.shape[0] == 4 and np.all(meta[:, :3] % 16 == 0)


# n covers every tile mix (tile_rows): 1-3 rows alone, 4 = one 4-row tile, 6, 8 = 4 + 4, 9 = 4 + 4 + 1,
# 11 = 6 + 4 + 1, 263 = two panels of 6-row tiles, a 4-row tile and a leftover. K = 300 spans three pieces
# of k (recurrence.KC).
TILE_CASES = [(1, 37), (3, 37), (4, 300), (6, 37), (8, 300), (9, 37), (11, 300), (263, 5)]


@pytest.mark.parametrize("n,K", TILE_CASES)
@pytest.mark.parametrize("blk0,blk1", [(0, 1), (0, 5), (1, 5), (2, 8), (3, 3)])
def test_block_sweep_order_changes_no_bit(n, K, blk0, blk1):
    """Drivers sweep the blocks down on every other step (cache reuse): each (row, block) result must be
    the same FMA chain either way, and blocks outside blk0..blk1 untouched."""
    rng = np.random.default_rng(n * 100 + blk0 * 10 + blk1)
    nblk = 8
    slabs = rng.normal(size=nblk * K * G).astype(np.float32)
    v = rng.normal(size=(n + 2, K)).astype(np.float32)
    rows = rng.permutation(n + 2)[:n].astype(np.int64)
    start = rng.normal(size=(n, nblk * G)).astype(np.float32)
    up, down = start.copy(), start.copy()
    _gates_add(slabs, v, up, rows, blk0, blk1, False)
    _gates_add(slabs, v, down, rows, blk0, blk1, True)
    np.testing.assert_array_equal(up, down)
    inside = slice(blk0 * G, blk1 * G)
    np.testing.assert_array_equal(np.delete(up, np.s_[inside], axis=1), np.delete(start, np.s_[inside], axis=1))
    w = slabs.reshape(nblk, K, G).astype(np.float64)
    products = [v[rows] @ w[b] for b in range(blk0, blk1)] or [np.zeros((n, 0))]
    expect = start[:, inside] + np.hstack(products)
    np.testing.assert_allclose(up[:, inside], expect, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n,K", TILE_CASES)
def test_row_tiles_change_no_bit(n, K):
    """A row's gate sums must not depend on the tile that computed it (6-row, 4-row or alone): the same
    FMA chain in each. This is what lets a batch and a single stream, or run() and step(), agree bit for bit."""
    rng = np.random.default_rng(n * 7 + K)
    nblk = 5
    slabs = rng.normal(size=nblk * K * G).astype(np.float32)
    v = rng.normal(size=(n, K)).astype(np.float32)
    start = rng.normal(size=(n, nblk * G)).astype(np.float32)
    together = start.copy()
    _gates_add(slabs, v, together, np.arange(n, dtype=np.int64), 0, nblk, False)
    for r in range(n):
        alone = start[r : r + 1].copy()
        _gates_add(slabs, v, alone, np.array([r], np.int64), 0, nblk, False)
        np.testing.assert_array_equal(together[r], alone[0])


@pytest.mark.parametrize("H", [1, 3, BLOCK, BLOCK + 1, 37, 64, 130])
@pytest.mark.parametrize("B", [1, 3, 9])
def test_kernels_match_reference(H, B):
    spec = random_spec(hidden_size=H, num_layers=2, seed=H * 10 + B)
    x = np.random.default_rng(B).normal(size=(11, B, spec.input_size)).astype(np.float32)
    y, st = fastlstm.Engine(spec).run(x)
    y_ref, h_ref, c_ref = reference_run(spec, x)
    assert rel_error(y, y_ref) < TOL
    assert rel_error(st.h, h_ref) < TOL and rel_error(st.c, c_ref) < TOL


def test_parallel_step_matches_run_bit_for_bit():
    """An engine above step()'s parallel crossover (engine.STEP_PARALLEL_MIN_WORK) steps its blocks on
    every thread; with 1 and with 2 threads the frames must equal run()'s outputs (serial at this size)
    bit for bit."""
    spec = random_spec(hidden_size=240, input_size=240, num_layers=2, seed=5)
    eng = fastlstm.Engine(spec)
    assert eng._step_parallel
    x = np.random.default_rng(5).normal(size=(7, 240)).astype(np.float32)
    y_run, st_run = eng.run(x)
    before = fastlstm.get_num_threads()
    try:
        for threads in sorted({1, min(2, __import__("numba").config.NUMBA_NUM_THREADS)}):
            fastlstm.set_num_threads(threads)
            st = eng.new_state()
            y_step = np.stack([eng.step(x_t, st) for x_t in x])
            np.testing.assert_array_equal(y_step, y_run)
            np.testing.assert_array_equal(st.c, st_run.c)
    finally:
        fastlstm.set_num_threads(before)


@pytest.mark.parametrize("H,B", [(400, 1), (390, 2), (272, 9)])  # above the parallel crossover
def test_threads_1_and_2_identical(H, B):
    spec = random_spec(hidden_size=H, input_size=20, seed=7)
    eng = fastlstm.Engine(spec)
    x = np.random.default_rng(0).normal(size=(6, B, 20)).astype(np.float32)
    before = fastlstm.get_num_threads()
    try:
        fastlstm.set_num_threads(1)
        y1, s1 = eng.run(x)
        fastlstm.set_num_threads(min(2, __import__("numba").config.NUMBA_NUM_THREADS))
        y2, s2 = eng.run(x)
    finally:
        fastlstm.set_num_threads(before)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(s1.c, s2.c)
    y_ref, _, _ = reference_run(spec, x)
    assert rel_error(y1, y_ref) < TOL


@pytest.mark.parametrize("H,B,L", [(1, 1, 1), (20, 1, 3), (33, 4, 2), (64, 16, 2), (300, 1, 1), (400, 1, 2)])
def test_step_over_sequence_equals_run(H, B, L):
    spec = random_spec(hidden_size=H, num_layers=L, seed=H + B)
    eng = fastlstm.Engine(spec)
    x = np.random.default_rng(2).normal(size=(8, B, spec.input_size)).astype(np.float32)
    y_run, final = eng.run(x)
    st = eng.new_state(B)
    ys = np.stack([eng.step(x[t] if B > 1 else x[t, 0], st) for t in range(8)])
    np.testing.assert_array_equal(ys.reshape(y_run.shape), y_run)
    np.testing.assert_array_equal(st.h, final.h)
    np.testing.assert_array_equal(st.c, final.c)


def test_step_returns_a_fresh_array_and_allocates_no_state():
    spec = random_spec(hidden_size=8, seed=1)
    eng = fastlstm.Engine(spec)
    st = eng.new_state()
    x = np.ones(spec.input_size, np.float32)
    y1 = eng.step(x, st)
    keep = y1.copy()
    eng.step(x, st)
    np.testing.assert_array_equal(y1, keep)  # the caller's array is not internal memory
    scratch = st._scratch
    eng.step(x, st)
    assert st._scratch is scratch  # scratch owned by the state, reused


def test_sequence_lens_batched_matches_reference():
    spec = random_spec(hidden_size=24, num_layers=2, num_directions=2, seed=11)
    x = np.random.default_rng(3).normal(size=(10, 12, spec.input_size)).astype(np.float32)
    lens = np.array([10, 0, 3, 7, 1, 10, 9, 2, 5, 10, 4, 6])
    y, st = fastlstm.Engine(spec).run(x, sequence_lens=lens)
    y_ref, h_ref, c_ref = reference_run(spec, x, sequence_lens=lens)
    assert rel_error(y, y_ref) < TOL
    assert rel_error(st.h, h_ref) < TOL and rel_error(st.c, c_ref) < TOL
