"""pytest-benchmark suite: fastlstm against ONNX Runtime and PyTorch on the same weights.

    pytest bench --benchmark-only                    # the full sweep (design defaults)
    pytest bench --benchmark-only --benchmark-json=out.json
    pytest bench --benchmark-disable                 # smoke test: tiny sizes, each call runs once (CI)

Benchmark groups are keyed by (mode, H, B, T, threads); members are the engines (fastlstm,
onnxruntime, torch), their paths below fp32 on the same weights (quantized_peers.py) and the roofline
proxy (numpy BLAS over the same weight bytes). Batched-step groups (test_bench_batched_step.py) have the
fp32 engines, fastlstm's (1, I) frame (B = 1) and StreamPool, and the proxy (streams.step_peers). A peer
that is not installed is skipped with the reason. The sweep: --bench-sizes / --bench-threads / --bench-batch
/ --bench-step-batch (or FASTLSTM_BENCH_SIZES / _THREADS / _BATCH / _STEP_BATCH, comma separated);
--bench-full (FASTLSTM_BENCH_FULL=1) runs the full sweep even under --benchmark-disable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from fastlstm.benchmarking.models import BenchModel, make_input, make_spec
from fastlstm.benchmarking.peers import ENGINES, PROXY, make_peers
from fastlstm.benchmarking.quantized_peers import BY_WEIGHTS, WEIGHT_TYPES
from fastlstm.benchmarking.streams import FRAME_2D, step_peers

FULL = {"sizes": [64, 128, 256, 512, 1024], "threads": [1, 2], "batch": [16, 64], "step_batch": [1, 4, 16, 64],
        "T": 100}
SMOKE = {"sizes": [32], "threads": [1], "batch": [4], "step_batch": [1, 4], "T": 10}
STEP_MODES = ("step", "batched_step")  # one frame per call
# the fp32 engines, each engine's path below fp32 on the same weights (fastlstm int8/fp16/bf16, ORT int8
# per-tensor / per-channel, torch qint8 / float16), and the proxy
MEMBERS = [*ENGINES, *(name for w in WEIGHT_TYPES if w != "fp32" for name in BY_WEIGHTS[w]), PROXY]


@dataclass(frozen=True)
class Case:
    mode: str  # "step" | "run" | "batched" | "batched_step"
    H: int
    B: int
    T: int
    threads: int

    @property
    def group(self) -> str:
        return f"{self.mode} H={self.H} B={self.B} T={self.T} threads={self.threads}"

    @property
    def id(self) -> str:
        return f"{self.mode}-H{self.H}-B{self.B}-T{self.T}-t{self.threads}"


def pytest_addoption(parser):
    group = parser.getgroup("fastlstm bench")
    group.addoption("--bench-sizes", help="hidden sizes, comma separated")
    group.addoption("--bench-threads", help="thread counts, comma separated")
    group.addoption("--bench-batch", help="batch sizes of the batched run, comma separated")
    group.addoption("--bench-step-batch", help="batch sizes of the batched step, comma separated")
    group.addoption("--bench-full", action="store_true", help="full sweep even with --benchmark-disable")


def _ints(text):
    return [int(v) for v in str(text).split(",") if v.strip()] if text else None


def sweep(config) -> dict:
    """Full sweep when benchmarking, a tiny one when benchmarks are disabled (smoke test)."""
    full = config.getoption("--bench-full") or os.environ.get("FASTLSTM_BENCH_FULL")
    disabled = config.getoption("benchmark_disable", default=False)
    chosen = dict(SMOKE if disabled and not full else FULL)
    for key in ("sizes", "threads", "batch", "step_batch"):
        option = f"--bench-{key.replace('_', '-')}"
        value = _ints(config.getoption(option) or os.environ.get(f"FASTLSTM_BENCH_{key.upper()}"))
        if value:
            chosen[key] = value
    return chosen


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    s = sweep(metafunc.config)
    modes = getattr(metafunc.module, "MODES", ("step",))
    members = getattr(metafunc.module, "MEMBERS", MEMBERS)
    batches = {"batched": s["batch"], "batched_step": s["step_batch"]}
    cases = []
    for threads in s["threads"]:
        for H in s["sizes"]:
            for mode in modes:
                for B in batches.get(mode, [1]):
                    cases.append(Case(mode, H, B, s["T"], threads))
    pairs = [(c, e) for c in cases for e in members if e != FRAME_2D or c.B == 1]  # (1, I): a B = 1 member
    metafunc.parametrize(("case", "engine"), pairs, ids=[f"{c.id}-{e}" for c, e in pairs])


@pytest.fixture(scope="session")
def bench_models():
    """One model per hidden size, built once and converted once per engine (cached in BenchModel)."""
    cache: dict[int, BenchModel] = {}

    def get(H: int) -> BenchModel:
        if H not in cache:
            cache[H] = BenchModel(make_spec(H))
        return cache[H]

    return get


@pytest.fixture
def prepared(case, engine, bench_models, benchmark):
    """The engine, prepared on the case's model and input; skipped with the reason if unavailable."""
    peers = step_peers(case.B) if case.mode == "batched_step" else make_peers(weights=WEIGHT_TYPES)
    peer = peers[engine]
    reason = peer.status()
    if reason:
        pytest.skip(f"{engine}: {reason}")
    x = make_input(case.T, case.B, case.H)
    try:
        peer.prepare(bench_models(case.H), case.threads, x)
    except ImportError as exc:
        pytest.skip(f"{engine}: {exc}")
    with peer.context():  # warm up outside the clock: first calls compile, allocate, fill caches
        for _ in range(2):
            peer.step() if case.mode in STEP_MODES else peer.run()
    peer.reset()
    benchmark.group = case.group
    benchmark.extra_info.update({"mode": case.mode, "H": case.H, "B": case.B, "T": case.T,
                                 "threads": case.threads, "engine": engine,
                                 "steps_per_call": 1 if case.mode in STEP_MODES else case.T,
                                 "streams_per_call": case.B})
    return peer
