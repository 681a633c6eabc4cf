"""Step mode: one frame per call, state carried (streaming latency at batch 1)."""

import numpy as np

MODES = ("step",)


def test_step(benchmark, prepared, case):
    with prepared.context():
        y = benchmark(prepared.step)
    assert np.isfinite(np.asarray(prepared._numpy(y))).all()
