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
from fastlstm.kernels.gemm import Tiling, gates_add, inputs, no_cell, sums_at, weights
from fastlstm.kernels.simd import LANES, fptr, iptr, vload_n, vstore_n
from fastlstm.plan import G, build_plan, unpack_rows

TOL = 2e-5
# Max abs error bound of tanh_fast and sigmoid_fast (float32), docs/performance.md; measured over every
# float32 by tools/fit_activations.py --check: tanh 7.66e-8, sigmoid 7.13e-8.
ACT_ABS_ERR = 1e-7


@njit(cache=False, fastmath=FASTMATH)
def _apply(xs, which):
    """The vector activation over xs, LANES at a time (a short last chunk through the masked load/store),
    compiled with the kernels' own fastmath setting."""
    out = np.empty_like(xs)
    src, dst = fptr(xs), fptr(out)
    for i in range(0, xs.shape[0], LANES):
        n = min(LANES, xs.shape[0] - i)
        v = vload_n(src, i, n)
        vstore_n(dst, i, tanh_fast(v) if which == 0 else sigmoid_fast(v), n)
    return out


@njit(cache=False)
def _gates_add(slabs, v, out, rows, blk0, blk1, down, panel):
    """gates_add over plain arrays: slabs (nblk*K*G,), v (rows, K), out (n, nblk*G) updated in place."""
    n = rows.shape[0]
    orow = np.arange(n) * out.shape[1]
    dst = fptr(out)
    w = fptr(slabs)
    src = inputs(fptr(v), 0, v.shape[1], iptr(rows))
    gates_add(weights(w, 0, v.shape[1], w, -1), src, weights(w, 0, 0, w, -1), src, np.int64(n),
              sums_at(dst, iptr(orow), -1, w), np.int64(blk0), np.int64(blk1), np.bool_(down), no_cell(dst),
              Tiling(np.int64(panel)))


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


@pytest.mark.parametrize("H", [1, 5, LANES, LANES + 3, 64])
def test_packed_slabs_hold_the_canonical_rows(H):
    """Block b's slab row k holds, at lane gate*LANES + u, W[gate*H + b*LANES + u, k] (zeros past H)."""
    spec = random_spec(input_size=7, hidden_size=H, seed=H)
    plan = build_plan(spec)
    rec = plan.layers[0]
    nblk = -(-H // LANES)
    slabs = plan.wbuf[rec["w_slabs"] : rec["w_slabs"] + nblk * 7 * G].reshape(nblk, 7, G)
    W = spec.layers[0][0].W
    for gate in range(4):
        for unit in range(nblk * LANES):
            b, u = divmod(unit, LANES)
            got = slabs[b, :, gate * LANES + u]
            np.testing.assert_array_equal(got, W[gate * H + unit] if unit < H else 0.0)
    bias = plan.wbuf[rec["bias"] : rec["bias"] + nblk * G]
    np.testing.assert_array_equal(unpack_rows(bias, H), spec.layers[0][0].b)


def test_packed_buffer_is_aligned_and_read_only():
    spec = random_spec(hidden_size=21, num_layers=2, num_directions=2, seed=3)
    plan = build_plan(spec)
    assert plan.wbuf.ctypes.data % 64 == 0 and not plan.wbuf.flags.writeable and not plan.layers.flags.writeable
    for field in ("w_slabs", "r_slabs", "bias", "cell"):
        assert np.all(plan.layers[field] % 16 == 0)
    assert plan.variant.ndim == 1 and plan.variant.dtype == np.float32  # fp32, default cells: no general cell compiled


# n covers every tile mix of both plans (gemm.split_wide / split_narrow): 1-3 rows alone, 4 = one 4-row tile,
# 6, 8 = 4 + 4, 9 = 4 + 4 + 1, 11 = 6 + 4 + 1, 263 = several panels of tall tiles, short tiles and a leftover.
# K = 300 spans three pieces of k (config.K_PIECE); the panel blocking is varied too.
TILE_CASES = [(1, 37), (3, 37), (4, 300), (6, 37), (8, 300), (9, 37), (11, 300), (263, 5)]
PANELS = [252, 12]


@pytest.mark.parametrize("n,K", TILE_CASES)
@pytest.mark.parametrize("blk0,blk1", [(0, 1), (0, 5), (1, 5), (2, 8), (3, 3)])
@pytest.mark.parametrize("panel", PANELS)
def test_block_sweep_order_changes_no_bit(n, K, blk0, blk1, panel):
    """Drivers sweep the blocks down on every other step (cache reuse): each (row, block) result must be
    the same FMA chain either way, and blocks outside blk0..blk1 untouched."""
    rng = np.random.default_rng(n * 100 + blk0 * 10 + blk1)
    nblk = 8
    slabs = rng.normal(size=nblk * K * G).astype(np.float32)
    v = rng.normal(size=(n + 2, K)).astype(np.float32)
    rows = rng.permutation(n + 2)[:n].astype(np.int64)
    start = rng.normal(size=(n, nblk * G)).astype(np.float32)
    up, down = start.copy(), start.copy()
    _gates_add(slabs, v, up, rows, blk0, blk1, False, panel)
    _gates_add(slabs, v, down, rows, blk0, blk1, True, panel)
    np.testing.assert_array_equal(up, down)
    inside = slice(blk0 * G, blk1 * G)
    np.testing.assert_array_equal(np.delete(up, np.s_[inside], axis=1), np.delete(start, np.s_[inside], axis=1))
    w = slabs.reshape(nblk, K, G).astype(np.float64)
    products = [v[rows] @ w[b] for b in range(blk0, blk1)] or [np.zeros((n, 0))]
    expect = start[:, inside] + np.hstack(products)
    np.testing.assert_allclose(up[:, inside], expect, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n,K", TILE_CASES)
def test_row_tiles_change_no_bit(n, K):
    """A row's gate sums must not depend on the tile that computed it (6-, 4-, 2-row or alone) nor on the
    cache blocking: the same FMA chain in each. This is what lets a batch and a single stream, or run() and
    step(), agree bit for bit."""
    rng = np.random.default_rng(n * 7 + K)
    nblk = 5
    slabs = rng.normal(size=nblk * K * G).astype(np.float32)
    v = rng.normal(size=(n, K)).astype(np.float32)
    start = rng.normal(size=(n, nblk * G)).astype(np.float32)
    together = start.copy()
    _gates_add(slabs, v, together, np.arange(n, dtype=np.int64), 0, nblk, False, 252)
    blocked = start.copy()
    _gates_add(slabs, v, blocked, np.arange(n, dtype=np.int64), 0, nblk, False, 12)
    np.testing.assert_array_equal(together, blocked)
    for r in range(n):
        alone = start[r : r + 1].copy()
        _gates_add(slabs, v, alone, np.array([r], np.int64), 0, nblk, False, 252)
        np.testing.assert_array_equal(together[r], alone[0])


@pytest.mark.parametrize("H", [1, 3, LANES, LANES + 1, 37, 64, 130])
@pytest.mark.parametrize("B", [1, 3, 9])
def test_kernels_match_reference(H, B):
    spec = random_spec(hidden_size=H, num_layers=2, seed=H * 10 + B)
    x = np.random.default_rng(B).normal(size=(11, B, spec.input_size)).astype(np.float32)
    y, st = fastlstm.Engine(spec).run(x)
    y_ref, h_ref, c_ref = reference_run(spec, x)
    assert rel_error(y, y_ref) < TOL
    assert rel_error(st.h, h_ref) < TOL and rel_error(st.c, c_ref) < TOL


@pytest.fixture
def team_always(monkeypatch):
    """Every call uses a team of every allowed thread, whatever its size (the crossovers set to 0), so
    small models exercise the team protocol (kernels/team.py)."""
    import fastlstm.engine
    from fastlstm import calibration

    team = min(2, fastlstm.threads.MAX_THREADS)
    monkeypatch.setattr(fastlstm.engine, "_SMALLEST_TEAM_WORK", 0)
    monkeypatch.setitem(calibration._memo, team, calibration.Crossovers(team, 0, 0, "test"))
    monkeypatch.setattr(fastlstm.threads, "_solo_until", [0.0])  # no contention left over from an earlier test
    before = fastlstm.get_num_threads()
    yield team
    fastlstm.set_num_threads(before)


def test_calls_run_alone_while_python_threads_contend(team_always, monkeypatch):
    """Once two Python threads were inside kernels together, calls run on their caller's thread alone for
    threads.CONTENDED_S (a team's worker would take the other caller's core); then the team comes back."""
    from fastlstm import threads

    if team_always < 2:
        pytest.skip("one usable core: there is no team")
    eng = fastlstm.Engine(random_spec(16, 64, seed=1))
    eng.step(np.zeros(16, np.float32), eng.new_state())  # compiled: the team may start
    fastlstm.set_num_threads(team_always)
    assert eng._team_for(10**9, "step") == team_always
    threads.enter()
    assert eng._team_for(10**9, "step") == 1  # another thread is inside now
    threads.enter()  # a second caller arrives while the first is inside
    threads.leave()
    threads.leave()
    assert threads.alone() is False and eng._team_for(10**9, "run") == 1  # nobody inside, but recently two
    threads._solo_until[0] = 0.0  # the window has passed
    assert eng._team_for(10**9, "run") == team_always


TEAM_CASES = [  # H, input, layers, directions, proj, batch, general cell (peepholes)
    (37, 11, 2, 1, 0, 1, False), (64, 20, 1, 2, 0, 3, False), (33, 7, 2, 1, 20, 4, False),
    (40, 9, 1, 1, 0, 2, True), (130, 30, 3, 1, 0, 9, False), (17, 5, 2, 2, 9, 5, True),
]


@pytest.mark.parametrize("H,I,L,D,P,B,peep", TEAM_CASES)
def test_threads_1_and_2_identical(team_always, H, I, L, D, P, B, peep):
    """run() and step() give the same bits with 1 and 2 threads (a team splits blocks, never a chain), and
    match the float64 reference; also with sequence_lens, a projection and the general cell."""
    spec = random_spec(I, H, L, D, P, peephole=peep, seed=H + B)
    eng = fastlstm.Engine(spec)
    rng = np.random.default_rng(H)
    x = rng.normal(size=(9, B, I)).astype(np.float32)
    lens = rng.integers(0, 10, B)
    results = {}
    for threads in sorted({1, team_always}):
        fastlstm.set_num_threads(threads)
        y, st = eng.run(x, sequence_lens=lens)
        steps = None
        if D == 1:
            st_step = eng.new_state(B)
            steps = np.stack([eng.step(x[t], st_step) for t in range(9)])
        results[threads] = (y, st.h, st.c, steps)
    for got, want in zip(results[team_always], results[1], strict=True):
        np.testing.assert_array_equal(got, want)
    y_ref, h_ref, c_ref = reference_run(spec, x, sequence_lens=lens)
    assert rel_error(results[1][0], y_ref) < TOL and rel_error(results[1][2], c_ref) < TOL


def test_team_under_many_calls_stays_exact(team_always):
    """Thousands of back-to-back team steps and runs (workers spinning, sleeping, arriving late): every
    result equals the single-thread one."""
    spec = random_spec(24, 48, 2, seed=3)
    eng = fastlstm.Engine(spec)
    x = np.random.default_rng(1).normal(size=(400, 24)).astype(np.float32)
    fastlstm.set_num_threads(1)
    y1, _ = eng.run(x)
    fastlstm.set_num_threads(team_always)
    st = eng.new_state()
    y2 = np.stack([eng.step(x_t, st) for x_t in x])
    np.testing.assert_array_equal(y2, y1)
    for _ in range(30):
        np.testing.assert_array_equal(eng.run(x[:37])[0], y1[:37])


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


def test_step_returns_a_fresh_array_or_fills_out():
    spec = random_spec(hidden_size=8, seed=1)
    eng = fastlstm.Engine(spec)
    st, st2 = eng.new_state(), eng.new_state()
    x = np.ones(spec.input_size, np.float32)
    y1 = eng.step(x, st)
    keep = y1.copy()
    eng.step(x, st)
    np.testing.assert_array_equal(y1, keep)  # the caller's array is not internal memory
    out = np.empty(8, np.float32)
    assert eng.step(x, st2, out=out) is out
    np.testing.assert_array_equal(out, keep)


def test_sequence_lens_batched_matches_reference():
    spec = random_spec(hidden_size=24, num_layers=2, num_directions=2, seed=11)
    x = np.random.default_rng(3).normal(size=(10, 12, spec.input_size)).astype(np.float32)
    lens = np.array([10, 0, 3, 7, 1, 10, 9, 2, 5, 10, 4, 6])
    y, st = fastlstm.Engine(spec).run(x, sequence_lens=lens)
    y_ref, h_ref, c_ref = reference_run(spec, x, sequence_lens=lens)
    assert rel_error(y, y_ref) < TOL
    assert rel_error(st.h, h_ref) < TOL and rel_error(st.c, c_ref) < TOL


@pytest.mark.parametrize("kind", ["int8", "fp16", "bf16"])
def test_quantized_kernels(team_always, kind):
    """The int8 / fp16 / bf16 kernels widen the stored weights in registers (GEMV) or into an L1 piece (GEMM
    tiles, K beyond one piece of k here). fp16 and bf16 widen exactly, so they give the fp32 kernels' bits on
    the dequantized weights; int8 scales each piece's sum instead of each weight (gemm.add_scaled), within
    float32 rounding of them. Every type: run == step, a batch (tiles + a leftover row) == one stream, 1 ==
    2 threads, bit for bit; and the float64 reference on the dequantized weights within 2e-5."""
    from fastlstm.quantize import dequantize, quantize

    spec = quantize(random_spec(150, 140, num_layers=2, seed=9), kind)
    quantized, reference = fastlstm.Engine(spec), fastlstm.Engine(dequantize(spec))
    x = np.random.default_rng(4).normal(size=(5, 9, 150)).astype(np.float32)
    results = []
    for threads in sorted({1, team_always}):
        fastlstm.set_num_threads(threads)
        y, st = quantized.run(x)
        y_ref, st_ref = reference.run(x)
        if kind == "int8":
            assert rel_error(y, y_ref) < TOL and rel_error(st.c, st_ref.c) < TOL
        else:
            np.testing.assert_array_equal(y, y_ref)
            np.testing.assert_array_equal(st.c, st_ref.c)
        st1 = quantized.new_state()
        steps = np.stack([quantized.step(x[t, 4], st1) for t in range(5)])
        np.testing.assert_array_equal(steps, y[:, 4])
        np.testing.assert_array_equal(quantized.run(x[:, 4:5])[0], y[:, 4:5])
        results.append((y, st.c))
    for got, want in zip(results[-1], results[0], strict=True):
        np.testing.assert_array_equal(got, want)
    y64, _, _ = reference_run(dequantize(spec), x)
    assert rel_error(results[0][0], y64) < TOL
