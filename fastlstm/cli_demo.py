"""`fastlstm demo`: the whole product in one command, no files needed.

Builds a fixed-seed LSTM, exports it to ONNX, converts it through the same code as `fastlstm convert`,
runs it whole and streamed, checks both against each other (and ONNX Runtime when installed) and
prints a latency table. Part of the CLI layer (it may import converters, lazily)."""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np

from .api import load
from .cli_convert import convert_file
from .spec import DirectionSpec, ModelSpec

DEMO_INPUT, DEMO_HIDDEN, DEMO_LAYERS, DEMO_STEPS, DEMO_SEED = 64, 128, 2, 100, 2024
STEP_MATCH_TOLERANCE = 1e-6


def demo_spec() -> ModelSpec:
    """A 2-layer LSTM with uniform(-1/sqrt(H), 1/sqrt(H)) weights, PyTorch's default initialisation."""
    rng = np.random.default_rng(DEMO_SEED)
    bound = 1.0 / np.sqrt(DEMO_HIDDEN)
    layers = []
    for l in range(DEMO_LAYERS):
        inputs = DEMO_INPUT if l == 0 else DEMO_HIDDEN
        layers.append([DirectionSpec(
            W=rng.uniform(-bound, bound, (4 * DEMO_HIDDEN, inputs)),
            R=rng.uniform(-bound, bound, (4 * DEMO_HIDDEN, DEMO_HIDDEN)),
            b=rng.uniform(-2 * bound, 2 * bound, 4 * DEMO_HIDDEN),
        )])
    spec = ModelSpec(DEMO_INPUT, DEMO_HIDDEN, DEMO_LAYERS, 1, 0, layers, source={"format": "demo"})
    return spec.validate()


def run_demo() -> int:
    import onnx

    import converters

    try:
        import onnxruntime
    except ImportError:
        onnxruntime = None
    spec = demo_spec()
    print(f"fastlstm demo: {DEMO_LAYERS}-layer LSTM, input {DEMO_INPUT}, hidden {DEMO_HIDDEN}, seed {DEMO_SEED}")
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path, packed_path = os.path.join(tmp, "demo.onnx"), os.path.join(tmp, "demo.fastlstm")
        onnx.save(converters.to_onnx(spec, with_state=True), onnx_path)
        t0 = time.perf_counter()
        report = convert_file(onnx_path, packed_path, verify=onnxruntime is not None)
        print(f"  converted {os.path.basename(onnx_path)} -> {os.path.basename(packed_path)} "
              f"in {time.perf_counter() - t0:.2f} s: {report['summary']}")
        if "verify" in report:
            v = report["verify"]
            print(f"  verified against {v['runtime']}: max rel error {v['max_rel_error']:.2e}")
        else:
            print("  onnxruntime is not installed: skipped the check against it")
        t0 = time.perf_counter()
        engine = load(packed_path)
        x = np.random.default_rng(DEMO_SEED + 1).standard_normal((DEMO_STEPS, DEMO_INPUT)).astype(np.float32)
        y_run, _ = engine.run(x)
        streamed = np.stack([engine.step(frame) for frame in x])
        print(f"  loaded and compiled in {time.perf_counter() - t0:.2f} s")
        gap = float(np.max(np.abs(streamed - y_run)))
        ok = gap <= STEP_MATCH_TOLERANCE
        print(f"  step() over {DEMO_STEPS} frames vs run(): max difference {gap:.1e} "
              f"({'ok' if ok else 'MISMATCH'}, tolerance {STEP_MATCH_TOLERANCE:.0e})")
        rows = [("fastlstm", *_time_fastlstm(engine, x))]
        if onnxruntime is not None:
            ort_err, ort_times = _ort_check_and_time(onnxruntime, onnx_path, x, y_run, spec)
            print(f"  run() vs ONNX Runtime on the full graph: max rel error {ort_err:.2e}")
            ok = ok and ort_err <= 2e-5
            rows.append(("onnxruntime", *ort_times))
    print()
    print(f"  {'engine':<12} {'step (us/frame)':>16} {'run (us/frame)':>15}   batch 1, T={DEMO_STEPS}, medians")
    for name, step_us, run_us in rows:
        print(f"  {name:<12} {step_us:>16.1f} {run_us:>15.2f}")
    if len(rows) == 2:
        print(f"  {'speedup':<12} {rows[1][1] / rows[0][1]:>15.1f}x {rows[1][2] / rows[0][2]:>14.1f}x")
    print("\nok" if ok else "\nFAILED: results disagree")
    return 0 if ok else 1


def _median_us(fn, repeats: int, per: int) -> float:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) / per * 1e6)
    return float(np.median(samples))


def _time_fastlstm(engine, x) -> tuple[float, float]:
    state = engine.new_state(1)
    frame = x[0]

    def steps():
        for _ in range(50):
            engine.step(frame, state)

    return _median_us(steps, 20, 50), _median_us(lambda: engine.run(x), 20, len(x))


def _ort_check_and_time(ort, onnx_path, x, y_run, spec) -> tuple[float, tuple[float, float]]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    L, H = spec.num_layers, spec.hidden_size
    zeros = np.zeros((L, 1, H), np.float32)
    full = {"X": x[:, None, :], "initial_h": zeros, "initial_c": zeros}
    y_ort = session.run(["Y"], full)[0][:, 0]
    err = float(np.max(np.abs(y_ort - y_run)) / max(np.max(np.abs(y_ort)), 1.0))
    frame_feed = {"X": x[:1, None, :], "initial_h": zeros.copy(), "initial_c": zeros.copy()}

    def steps():
        for _ in range(50):
            _, h, c = session.run(None, frame_feed)
            frame_feed["initial_h"], frame_feed["initial_c"] = h, c

    return err, (_median_us(steps, 20, 50), _median_us(lambda: session.run(["Y"], full), 20, len(x)))
