"""Generation mode: tokens/s of a greedy text-generation loop at batch 1 (Embedding V x H -> LSTM H ->
Linear V; one call = the model on the last token + argmax), fastlstm vs ONNX Runtime vs PyTorch on the
same weights (fastlstm.benchmarking.generate). Full sweep: V = 100 and 10,000, H = 256 and 1024, 1 and 2
threads (--bench-sizes / --bench-threads choose H and threads); smoke: V = 50, the smoke sizes.
"""

from __future__ import annotations

import pytest
from conftest import sweep

from fastlstm.benchmarking.generate import GenerateModel, Generator
from fastlstm.benchmarking.peers import ENGINES, make_peers

FULL_SIZES, VOCABS, SMOKE_VOCABS = [256, 1024], [100, 10000], [50]


def pytest_generate_tests(metafunc):
    s = sweep(metafunc.config)
    full = s["sizes"] != [32]  # the smoke sweep's size
    sizes = FULL_SIZES if full and s["sizes"] == [64, 128, 256, 512, 1024] else s["sizes"]
    cases = [(V, H, t) for t in s["threads"] for H in sizes for V in (VOCABS if full else SMOKE_VOCABS)]
    metafunc.parametrize("V,H,threads", cases, ids=[f"V{V}-H{H}-t{t}" for V, H, t in cases])
    metafunc.parametrize("engine", ENGINES)


_models: dict = {}


def test_generate(benchmark, V, H, threads, engine):
    reason = make_peers(with_proxy=False)[engine].status()
    if reason:
        pytest.skip(f"{engine}: {reason}")
    model = _models.setdefault((V, H), GenerateModel(V, H))
    loop = Generator(engine, model, threads)
    with loop.context():
        for _ in range(3):  # warm up outside the clock
            loop.next_token()
        benchmark.group = f"generate V={V} H={H} threads={threads}"
        benchmark.extra_info.update({"mode": "generate", "V": V, "H": H, "threads": threads, "engine": engine})
        token = benchmark(loop.next_token)
    assert 0 <= token < V
