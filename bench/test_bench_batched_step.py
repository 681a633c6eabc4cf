"""Batched step: eng.step(x (B, I), state) for B = 1, 4, 16, 64, one frame per call with the state carried, next
to ONNX Runtime (a T = 1 session.run at batch B feeding h / c back), PyTorch (nn.LSTM on (1, B, I) with its state),
fastlstm's (1, I) frame (B = 1) and StreamPool.step, and the proxy. extra_info["per_stream_us"] = median / B: a
batch that costs more per stream than B single streams (issue 12: B = 16 cost 2.2x one stream) shows there."""

import numpy as np

from fastlstm.benchmarking.peers import ENGINES, PROXY
from fastlstm.benchmarking.streams import FRAME_2D, POOL

MODES = ("batched_step",)
MEMBERS = (ENGINES[0], FRAME_2D, POOL, *ENGINES[1:], PROXY)


def test_batched_step(benchmark, prepared, case, engine):
    with prepared.context():
        y = np.asarray(prepared._numpy(benchmark(prepared.step)))
    assert np.isfinite(y).all()
    if engine != PROXY:
        assert y.size == case.B * case.H
    if benchmark.stats:
        benchmark.extra_info["per_stream_us"] = benchmark.stats.stats.median * 1e6 / case.B
