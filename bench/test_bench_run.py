"""Run mode: the whole sequence per call, batch 1 ("run") and batched ("batched")."""

import numpy as np

from fastlstm.benchmarking.peers import PROXY

MODES = ("run", "batched")


def test_run(benchmark, prepared, case, engine):
    with prepared.context():
        y = np.asarray(prepared._numpy(benchmark(prepared.run)))
    assert np.isfinite(y).all()
    if engine != PROXY:
        assert y.shape == (case.T, case.B, case.H)
