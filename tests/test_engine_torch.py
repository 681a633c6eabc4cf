"""fastlstm.Engine vs PyTorch nn.LSTM: run, step, initial state, batch_first, sequence_lens, save/load."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")

from torch_models import (  # noqa: E402
    CONFIGS,
    TOL,
    Config,
    make_inputs,
    make_lstm,
    rel_err,
    run_torch,
    torch_state_to_ld,
)

import fastlstm  # noqa: E402
from converters.torch_import import from_torch  # noqa: E402


def _engine_state(eng, cfg: Config, state):
    """torch's (h0, c0) as a fastlstm State, or None."""
    if state is None:
        return None
    st = eng.new_state(cfg.B)
    h0, c0 = torch_state_to_ld(state, cfg.num_layers, cfg.D)
    st.h[...] = h0
    st.c[...] = c0
    return st


def _errors(y, st, torch_out, cfg: Config) -> dict:
    y_t, h_t, c_t = torch_out
    h_ref, c_ref = torch_state_to_ld((h_t, c_t), cfg.num_layers, cfg.D)
    return {"y": rel_err(y, y_t), "h": rel_err(st.h, h_ref), "c": rel_err(st.c, c_ref)}


@pytest.fixture(scope="module", params=CONFIGS, ids=str)
def case(request):
    cfg = request.param
    lstm = make_lstm(cfg)
    return cfg, lstm, fastlstm.Engine(from_torch(lstm))


def test_run_matches_torch(case):
    cfg, lstm, eng = case
    x, state = make_inputs(cfg)
    st0 = _engine_state(eng, cfg, state)
    snapshot = None if st0 is None else st0.copy()
    y, st = eng.run(x, state=st0)
    assert y.shape == (cfg.T, cfg.B, cfg.D * cfg.Hout) and y.dtype == np.float32
    assert st.h.shape == (cfg.num_layers, cfg.D, cfg.B, cfg.Hout)
    assert st.c.shape == (cfg.num_layers, cfg.D, cfg.B, cfg.hidden_size)
    errs = _errors(y, st, run_torch(lstm, x, state), cfg)
    assert max(errs.values()) <= TOL, errs
    if st0 is not None:  # the state passed in is not modified
        np.testing.assert_array_equal(st0.h, snapshot.h)
        np.testing.assert_array_equal(st0.c, snapshot.c)


def test_run_batch_first(case):
    cfg, lstm, eng = case
    x, state = make_inputs(cfg)
    y_tm, st_tm = eng.run(x, state=_engine_state(eng, cfg, state))
    y_bf, st_bf = eng.run(np.ascontiguousarray(x.transpose(1, 0, 2)), state=_engine_state(eng, cfg, state),
                          batch_first=True)
    assert y_bf.shape == (cfg.B, cfg.T, cfg.D * cfg.Hout)
    np.testing.assert_array_equal(y_bf, y_tm.transpose(1, 0, 2))
    np.testing.assert_array_equal(st_bf.h, st_tm.h)


def _step_all(eng, cfg: Config, x, state):
    st = _engine_state(eng, cfg, state) or eng.new_state(cfg.B)
    return np.stack([eng.step(x[t], st) for t in range(cfg.T)]), st


def test_step_matches_torch(case):
    cfg, lstm, eng = case
    if cfg.bidirectional:
        with pytest.raises(fastlstm.InputError):
            eng.step(np.zeros((cfg.B, cfg.input_size), np.float32), eng.new_state(cfg.B))
        return
    x, state = make_inputs(cfg)
    ys, st = _step_all(eng, cfg, x, state)
    errs = _errors(ys, st, run_torch(lstm, x, state), cfg)
    assert max(errs.values()) <= TOL, errs


def test_step_bit_identical_to_run(case):
    """DESIGN.md: run and step are bit-compatible."""
    cfg, lstm, eng = case
    if cfg.bidirectional:
        pytest.skip("step() needs a forward-only model")
    x, state = make_inputs(cfg)
    y_run, st_run = eng.run(x, state=_engine_state(eng, cfg, state))
    ys, st = _step_all(eng, cfg, x, state)
    np.testing.assert_array_equal(ys, y_run)
    np.testing.assert_array_equal(st.h, st_run.h)
    np.testing.assert_array_equal(st.c, st_run.c)


def test_unbatched_2d_input_and_default_stream():
    cfg = Config(5, 8, num_layers=2, T=9)
    lstm = make_lstm(cfg)
    eng = fastlstm.Engine(from_torch(lstm))
    x, _ = make_inputs(cfg)
    y_t, h_t, c_t = run_torch(lstm, x)
    y, st = eng.run(x[:, 0])
    assert y.shape == (cfg.T, cfg.Hout)
    assert rel_err(y, y_t[:, 0]) <= TOL
    eng.reset()
    ys = np.stack([eng.step(x[t, 0]) for t in range(cfg.T)])
    assert ys.shape == (cfg.T, cfg.Hout)
    assert rel_err(ys, y_t[:, 0]) <= TOL
    eng.reset()
    np.testing.assert_array_equal(eng.step(x[0, 0]), ys[0])  # reset really zeroed the default stream


@pytest.mark.parametrize("cfg", [Config(4, 6, num_layers=2, bidirectional=True, B=4, T=8, init=True),
                                 Config(3, 9, proj_size=5, num_layers=2, B=3, T=6)], ids=str)
def test_sequence_lens_matches_packed_sequence(cfg):
    """torch's packed sequences implement the same semantics as ONNX sequence_lens."""
    lstm = make_lstm(cfg)
    eng = fastlstm.Engine(from_torch(lstm))
    x, state = make_inputs(cfg)
    lens = np.array([cfg.T, 1, cfg.T - 2, 3][:cfg.B], dtype=np.int64)
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.from_numpy(x), torch.from_numpy(lens),
                                                     enforce_sorted=False)
    with torch.no_grad():
        hx = None if state is None else tuple(torch.from_numpy(s) for s in state)
        out, (h_t, c_t) = lstm(packed, hx)
        y_t, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=cfg.T)
    y, st = eng.run(x, state=_engine_state(eng, cfg, state), sequence_lens=lens)
    errs = _errors(y, st, (y_t.numpy(), h_t.numpy(), c_t.numpy()), cfg)
    assert max(errs.values()) <= TOL, errs
    for b, n in enumerate(lens):
        assert not y[n:, b].any()


def test_save_load_round_trip(tmp_path):
    cfg = Config(6, 10, num_layers=2, bidirectional=True, proj_size=4, B=2, init=True)
    lstm = make_lstm(cfg)
    path = tmp_path / "m.fastlstm"
    fastlstm.save(from_torch(lstm), path)
    eng = fastlstm.load(path)
    x, state = make_inputs(cfg)
    y, st = eng.run(x, state=_engine_state(eng, cfg, state))
    errs = _errors(y, st, run_torch(lstm, x, state), cfg)
    assert max(errs.values()) <= TOL, errs


def test_larger_hidden_size():
    """H not a multiple of the kernel block, several blocks, long-ish sequence."""
    cfg = Config(40, 75, num_layers=2, T=30, B=2, init=True)
    lstm = make_lstm(cfg)
    with torch.no_grad():  # keep gates out of deep saturation at this fan-in
        for p in lstm.parameters():
            p.mul_(0.3)
    eng = fastlstm.Engine(from_torch(lstm))
    x, state = make_inputs(cfg)
    y, st = eng.run(x, state=_engine_state(eng, cfg, state))
    errs = _errors(y, st, run_torch(lstm, x, state), cfg)
    assert max(errs.values()) <= TOL, errs
