"""`fastlstm bench`: the sweep. Builds one model per size, runs every engine on it side by side
(interleaved rounds, medians), checks accuracy against ONNX Runtime, measures cold start and load
memory in fresh processes, then prints the table and writes report.md, results.json and a plot.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from . import coldstart, isolated, measure, plan_report, report, streams
from .generate import GenerateModel, measure_generate
from .machine import load_average, machine_info
from .models import BenchModel, ConverterMissing, make_input, make_spec
from .peers import ENGINES, PROXY, make_peers

SMOKE_ENV = "FASTLSTM_BENCH_SMOKE"  # test-only: minimal repetitions, tiny cold-start models


@dataclass
class Config:
    sizes: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024])
    threads: list[int] = field(default_factory=lambda: [1, 2])
    batch: list[int] = field(default_factory=lambda: [16, 64])
    T: int = 100
    rounds: int = 9  # interleaved rounds per measurement; the median is reported
    block_s: float = 0.04  # target duration of one timed block
    budget_s: float = 15.0  # per figure: slow configurations run fewer rounds, down to min_rounds
    min_rounds: int = 3
    coldstart_hidden: int = 256
    coldstart_repeats: int = 3
    memory_hidden: int = 2048  # "large model": 4H x (I + H) x 2 float32 ~ 134 MB at H = I = 2048
    fresh_cache: bool = True  # also time fastlstm's very first run (empty numba cache)
    preset: str = "default"
    # weight types: fp32 plus each engine's path below it on the same weights (quantized_peers.py)
    weights: list[str] = field(default_factory=lambda: ["fp32", "int8", "fp16", "bf16"])
    weights_threads: list[int] | None = None  # thread counts with the types below fp32 (None: every one)
    # batched step (streams.py): B per call, at the reference point (H, I) and at these H (None: sizes; I = H)
    step_batch: list[int] = field(default_factory=lambda: [1, 4, 16, 64])
    step_reference: tuple[int, int] = (128, 40)
    step_sizes: list[int] | None = field(default_factory=lambda: [64, 256, 1024])
    pythreads_hidden: int = 512  # two Python threads, a stream each (streams.py)
    pythreads_steps: int = 64  # frames per stream per timed call
    isolated: bool = True  # 2+ threads: also each engine in its own process (isolated.py)
    generate_sizes: list[int] = field(default_factory=lambda: [256, 1024])  # H of the generate rows
    vocabs: list[int] = field(default_factory=lambda: [100, 10000])  # V of the generate rows


# --quick: every kind of row, fewer of each: no H = 128 / 512, batched run at B = 16 only, int8 as the one type
# below fp32 (1 thread only), batched step at the reference point only and B = 1, 16, 64, Python threads at H = 256,
# generation at H = 256 only,
# shorter blocks and fewer rounds, one warm cold start per engine (the default sweep adds the empty-cache compile).
QUICK = Config(sizes=[64, 256, 1024], threads=[1, 2], batch=[16], rounds=5, block_s=0.02, budget_s=5.0, min_rounds=1,
               coldstart_repeats=1, fresh_cache=False, preset="quick", weights=["fp32", "int8"], weights_threads=[1],
               step_batch=[1, 16, 64], step_sizes=[], pythreads_hidden=256, generate_sizes=[256])


def make_config(quick: bool, sizes, threads, batch, weights=None, step_batch=None) -> Config:
    cfg = QUICK if quick else Config()
    if os.environ.get(SMOKE_ENV):
        cfg = replace(cfg, T=10, rounds=3, block_s=0.002, coldstart_repeats=1, fresh_cache=False,
                      pythreads_steps=8, preset=cfg.preset + "+smoke")
    cfg = replace(cfg, sizes=sizes or cfg.sizes, threads=threads or cfg.threads, batch=batch or cfg.batch,
                  weights=["fp32", *(w for w in weights if w != "fp32")] if weights else cfg.weights,
                  weights_threads=None if weights else cfg.weights_threads, step_batch=step_batch or cfg.step_batch,
                  step_sizes=None if sizes and cfg.step_sizes else cfg.step_sizes,  # --sizes: batched step there too
                  generate_sizes=sizes or cfg.generate_sizes)  # --sizes chooses the generate rows' H too
    if os.environ.get(SMOKE_ENV):
        cfg = replace(cfg, coldstart_hidden=min(cfg.sizes), memory_hidden=min(cfg.sizes),
                      pythreads_hidden=min(cfg.sizes), vocabs=[50])
    return cfg


class Progress:
    """One line per finished measurement on stderr: counter, what, elapsed time."""

    def __init__(self, total: int):
        self.total, self.done, self.t0 = total, 0, time.perf_counter()

    def __call__(self, text: str) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.t0
        print(f"[{self.done:>3}/{self.total}] {elapsed:6.1f}s  {text}", file=sys.stderr, flush=True)


def run_bench(quick: bool = False, out: str = "bench-out", sizes=None, threads=None, batch=None,
              weights=None, step_batch=None) -> int:
    cfg = make_config(quick, sizes, threads, batch, weights, step_batch)
    from fastlstm.threads import MAX_THREADS

    if max(cfg.threads) > MAX_THREADS:
        print(f"fastlstm bench: error: --threads up to {MAX_THREADS} on this machine (the cores this process may "
              "use; FASTLSTM_NUM_THREADS caps them)", file=sys.stderr)
        return 2
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    load_start = load_average()

    peers = make_peers(weights=cfg.weights)
    status = {name: peer.status() for name, peer in peers.items()}
    for name in peers:
        if status[name] and name != PROXY:
            print(f"note: {name} {status[name]}: its column will say so", file=sys.stderr)
    modes = [("step", 1), ("run", 1)] + [("batched", b) for b in cfg.batch]
    cold_children = 3 * cfg.coldstart_repeats + int(cfg.fresh_cache) + 3
    own_process = isolated.configurations(cfg, streams.step_points(cfg)) if cfg.isolated else []
    generate_rows = len(cfg.threads) * len(cfg.generate_sizes) * len(cfg.vocabs)
    progress = Progress(len(cfg.threads) * (len(cfg.sizes) * len(modes) + len(streams.step_points(cfg))
                                            * len(cfg.step_batch) + 1) + len(own_process) + generate_rows
                        + cold_children)
    print(f"fastlstm bench ({cfg.preset}): H={cfg.sizes} threads={cfg.threads} batch={cfg.batch} T={cfg.T}, "
          f"weights={cfg.weights}, batched step B={cfg.step_batch} at (H, I)={streams.step_points(cfg)}, "
          f"{cfg.rounds} interleaved rounds per figure", file=sys.stderr)
    settled = plan_report.settle_crossovers(cfg.threads)  # before any timed call (it may measure)

    models: dict[int, BenchModel] = {}
    records = []
    for n_threads in cfg.threads:
        measured = _peers_at(peers, cfg, n_threads)
        for H in cfg.sizes:
            model = models.setdefault(H, BenchModel(make_spec(H)))
            for mode, B in modes:
                rec = measure_one(model, measured, status, mode, B, cfg.T, n_threads, cfg)
                records.append(rec)
                progress(report.progress_line(rec))
    batched_step = streams.batched_step_rows(cfg, dict(status), progress)
    python_threads = streams.python_thread_rows(cfg, progress)
    own = []
    with isolated.Isolated(status) as engines:
        for config in own_process:
            own.append(engines.measure(config, cfg, plan_report.crossovers_of(config["threads"])))
            progress(isolated_progress_line(own[-1]))

    generate_records = []
    gen_models = {}
    for n_threads in cfg.threads:
        for H in cfg.generate_sizes:
            for V in cfg.vocabs:
                model = gen_models.setdefault((V, H), GenerateModel(V, H))
                rec = measure_generate(model, list(ENGINES), status, n_threads, cfg)
                generate_records.append(rec)
                progress(report.progress_line(rec))
    coldstart_result = _coldstart(cfg, status, progress)
    wall = time.perf_counter() - t_start
    results = {
        "schema": 2,
        "machine": {**machine_info(cfg.threads), "load_average_start": load_start},
        "config": asdict(cfg),
        "plan": plan_report.results(cfg, settled),
        "peers": {name: {"available": status[name] is None, "status": status[name] or "ok",
                         "version": peers[name].version() if status[name] is None else None}
                  for name in peers if name != PROXY},
        "results": records,
        "batched_step": batched_step,
        "python_threads": python_threads,
        "isolated": own,
        "generate": generate_records,
        **coldstart_result,
        "wall_time_s": wall,
        "command": _command_line(),
    }
    paths = report.write_all(results, out_dir)
    print(report.text_tables(results))
    print(f"\nwrote {', '.join(str(p) for p in paths)}  ({wall:.0f} s)")
    return 0


def _peers_at(peers: dict, cfg: Config, threads: int) -> dict:
    """The peers measured at `threads`: all of them, or the fp32 engines and the proxy where cfg.weights_threads
    leaves the types below fp32 out."""
    if cfg.weights_threads is None or threads in cfg.weights_threads:
        return peers
    return {name: peer for name, peer in peers.items() if name in (*ENGINES, PROXY)}


def isolated_progress_line(rec: dict) -> str:
    if rec["mode"] == "batched_step":
        return streams.progress_line(rec)
    return report.progress_line(rec) + "  (own processes)"


def _command_line() -> str:
    args = sys.argv[sys.argv.index("bench") + 1:] if "bench" in sys.argv else []
    return " ".join(["fastlstm bench", *args])


def measure_one(model: BenchModel, peers, status, mode: str, B: int, T: int, threads: int,
                cfg: Config) -> dict:
    """Time every available engine (and the proxy) on one (mode, H, B, T, threads) configuration."""
    x = make_input(T, B, model.input_size)
    rec = {"mode": mode, "H": model.hidden, "B": B, "T": T, "threads": threads, "engines": {}}
    ready = {}
    for name in peers:  # the fp32 engines, their paths below fp32, the proxy
        if status[name]:
            rec["engines"][name] = {"status": status[name]}
            continue
        try:
            peers[name].prepare(model, threads, x)
        except (ImportError, ConverterMissing) as exc:  # not usable at all: say so everywhere after
            status[name] = f"unavailable ({exc})"
            rec["engines"][name] = {"status": status[name]}
            continue
        except Exception as exc:  # this configuration only
            rec["engines"][name] = {"status": f"failed: {type(exc).__name__}: {exc}"}
            continue
        ready[name] = peers[name]
    candidates = {}
    for name, peer in ready.items():
        fn = peer.step if (mode == "step" or name == PROXY) else peer.run
        candidates[name] = measure.Candidate(fn, peer.context)
    seed = model.hidden * 1000 + B * 10 + threads  # deterministic shuffles
    timings = measure.interleaved(candidates, cfg.rounds, cfg.block_s, seed=seed,
                                  budget_s=cfg.budget_s, min_rounds=cfg.min_rounds)
    per_call_steps = 1 if mode == "step" else T
    for name, timing in timings.items():
        entry = timing.to_json()
        steps = 1 if name == PROXY else per_call_steps
        entry["us_per_step"] = entry["median_us"] / steps
        entry["frames_per_s"] = B * 1e6 / entry["us_per_step"]
        rec["engines"][name] = entry
    _accuracy(rec, ready, candidates, mode, x)
    return rec


def _accuracy(rec: dict, ready: dict, candidates: dict, mode: str, x: np.ndarray) -> None:
    """max |y - y_onnxruntime| over the benchmarked input (step mode: frame by frame from zero state).
    Run modes reuse the output of each engine's first (warm-up) call."""
    if "onnxruntime" not in ready:
        rec["reference"] = None
        return
    rec["reference"] = "onnxruntime run"

    def run_output(name):
        if mode == "step":
            return ready[name].run_output()
        return np.asarray(ready[name]._numpy(candidates[name].first_output))

    ref = run_output("onnxruntime")
    for name, peer in ready.items():
        if name == PROXY:
            continue
        y = peer.step_outputs(x) if mode == "step" else run_output(name)
        rec["engines"][name]["max_abs_err"] = float(np.max(np.abs(np.asarray(y, np.float32) - ref)))


def _coldstart(cfg: Config, status, progress) -> dict:
    engines = [e for e in ENGINES if status[e] is None]
    out = {}
    plan = (("coldstart", cfg.coldstart_hidden, cfg.coldstart_repeats, cfg.fresh_cache),
            ("memory", cfg.memory_hidden, 1, False))
    for key, H, repeats, fresh in plan:
        model = BenchModel(make_spec(H))
        try:
            res = coldstart.measure(model, engines, repeats, fresh_numba_cache=fresh,
                                    progress=lambda e, k=key, h=H: progress(f"{k} H={h} {e}"))
        except Exception as exc:  # a failure here must not lose the sweep
            res = {"error": f"{type(exc).__name__}: {exc}"}
        for name in ENGINES:
            if status[name]:
                res[name] = {"status": status[name]}
        out[key] = {"H": H, "input_size": H, "T": 1, "B": 1, "repeats": repeats, "engines": res}
    return out


if __name__ == "__main__":  # python -m fastlstm.benchmarking.cli [--quick]
    sys.exit(run_bench(quick="--quick" in sys.argv))
