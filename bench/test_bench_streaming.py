"""Streaming at scale (issue 5): batched stepping, thread parallelism, chunks versus run.

Groups (compare the members of one group; per-stream figures are in extra_info):
    streaming batched-step H=..   step() on a batch-B state, B = 1, 4, 16, 64  (per_stream_us)
    streaming threads H=.. budget=n  N steps on each of 2 streams: serial vs one thread per stream, at a
                                     thread budget (fastlstm.set_num_threads) of 1 and 2
    streaming chunk H=.. T=..     step_chunk() vs run() vs T x step() on the same T frames
Smoke mode (--benchmark-disable) runs one tiny size; the full sizes are below.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import fastlstm
from fastlstm.benchmarking.models import make_input, make_spec
from fastlstm.threads import MAX_THREADS

FULL_SIZES, SMOKE_SIZES = [64, 256, 512], [32]
THREAD_SIZES = [512]
THREAD_STEPS = 200


def _sizes(config, full):
    return SMOKE_SIZES if config.getoption("benchmark_disable", default=False) else full


def pytest_generate_tests(metafunc):  # module-level hook: only this module's tests
    if "stream_hidden" in metafunc.fixturenames:
        metafunc.parametrize("stream_hidden", _sizes(metafunc.config, FULL_SIZES))
    if "thread_hidden" in metafunc.fixturenames:
        metafunc.parametrize("thread_hidden", _sizes(metafunc.config, THREAD_SIZES))


@pytest.fixture(scope="module")
def engines():
    cache = {}

    def get(H):
        if H not in cache:
            cache[H] = fastlstm.Engine(make_spec(H, input_size=40))
        return cache[H]

    previous = fastlstm.get_num_threads()
    fastlstm.set_num_threads(1)  # one core per kernel call: the streams are the parallelism here
    yield get
    fastlstm.set_num_threads(previous)


@pytest.mark.parametrize("B", [1, 4, 16, 64])
def test_batched_step(benchmark, engines, stream_hidden, B):
    eng = engines(stream_hidden)
    x = make_input(1, B, eng.input_size)[0]
    st = eng.new_state(B)
    benchmark.group = f"streaming batched-step H={stream_hidden}"
    benchmark.extra_info.update({"H": stream_hidden, "B": B, "streams_per_call": B})
    y = benchmark(eng.step, x, st)
    assert y.shape == (B, eng.output_size) and np.isfinite(y).all()
    benchmark.extra_info["per_stream_us"] = benchmark.stats.stats.median * 1e6 / B if benchmark.stats else None


@pytest.mark.parametrize("budget", [1, 2])
@pytest.mark.parametrize("mode", ["serial", "two_threads"])
def test_threads(benchmark, engines, thread_hidden, mode, budget):
    """Two Python threads, each stepping its own stream, against serial, at a thread budget of 1 and 2 (the
    kernels run a call on its caller's thread alone while another Python thread is inside one)."""
    if budget > MAX_THREADS:
        pytest.skip(f"a budget of {budget} threads needs {budget} usable cores")
    eng = engines(thread_hidden)
    frames = make_input(THREAD_STEPS, 1, eng.input_size)[:, 0]
    states = [eng.new_state(), eng.new_state()]
    outs = [np.empty(eng.output_size, np.float32) for _ in states]

    def steps(k):
        for f in frames:
            eng.step(f, states[k], out=outs[k])

    def serial():
        steps(0)
        steps(1)

    def two_threads():
        threads = [threading.Thread(target=steps, args=(k,)) for k in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()

    benchmark.group = f"streaming threads H={thread_hidden} budget={budget}"
    benchmark.extra_info.update({"H": thread_hidden, "streams": 2, "steps_per_stream": THREAD_STEPS,
                                 "thread_budget": budget})
    fastlstm.set_num_threads(budget)
    try:
        benchmark.pedantic(serial if mode == "serial" else two_threads, rounds=5, warmup_rounds=1)
    finally:
        fastlstm.set_num_threads(1)
    assert np.isfinite(states[0].h).all()


@pytest.mark.parametrize("T", [10, 100])
@pytest.mark.parametrize("mode", ["step_chunk", "run", "steps"])
def test_chunk(benchmark, engines, stream_hidden, T, mode):
    eng = engines(stream_hidden)
    x = make_input(T, 1, eng.input_size)[:, 0]
    st = eng.new_state()
    calls = {
        "step_chunk": lambda: eng.step_chunk(x, st),
        "run": lambda: eng.run(x, st)[0],
        "steps": lambda: [eng.step(f, st) for f in x],
    }
    benchmark.group = f"streaming chunk H={stream_hidden} T={T}"
    benchmark.extra_info.update({"H": stream_hidden, "T": T, "steps_per_call": T})
    y = benchmark(calls[mode])
    assert np.isfinite(np.asarray(y)).all()
