"""A real-time streaming loop: N live streams (say, one voice-activity detector per phone call), one
frame of features per stream every --frame-ms, calls ending and new calls starting as the loop runs.

Every tick the loop sleeps until the next frame is due, then advances every open stream by that frame:
fastlstm with one batched call through a StreamPool, ONNX Runtime on the same weights with one session
call carrying (h, c) in and out. Both run in the same loop (alternating which goes first), so they see
the same machine. Printed per engine: compute latency per tick (p50 / p99 / max), deadline misses and the
real-time factor RTF = compute time / audio time (below 1 keeps up; 0.01 leaves 99% of a core free).
The scheduler's wake-up lag (how late the loop woke for a frame) is printed too: it adds to both.

    python examples/realtime.py                                  # 16 streams, H=128, 5 s of 10 ms frames
    python examples/realtime.py --streams 64 --hidden 256 --seconds 10
    python examples/realtime.py --no-sleep                       # as fast as possible: compute only
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fastlstm
from fastlstm.benchmarking.models import make_spec


def percentiles(seconds) -> str:
    us = np.asarray(seconds) * 1e6
    return (f"p50 {np.percentile(us, 50):8.1f} us   p99 {np.percentile(us, 99):8.1f} us   "
            f"max {us.max():8.1f} us")


class OrtStreams:
    """The same streams on ONNX Runtime: h, c (1, n, H) arrays carried between session calls."""

    def __init__(self, spec, threads: int):
        import onnxruntime as ort

        from converters import to_onnx

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        model = to_onnx(spec, opset=17, ir_version=8, with_state=True)
        self.session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        self.H = spec.hidden_size
        self.h = np.zeros((1, 0, self.H), np.float32)
        self.c = np.zeros((1, 0, self.H), np.float32)

    def open(self):
        zeros = np.zeros((1, 1, self.H), np.float32)
        self.h, self.c = np.concatenate([self.h, zeros], 1), np.concatenate([self.c, zeros], 1)

    def close(self, row: int):
        self.h, self.c = np.delete(self.h, row, 1), np.delete(self.c, row, 1)

    def step(self, x):
        y, self.h, self.c = self.session.run(None, {"X": x[None], "initial_h": self.h, "initial_c": self.c})
        return y[0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=16, help="live streams at any time")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--input", type=int, default=40, help="features per frame (e.g. 40 log-mel bands)")
    ap.add_argument("--frame-ms", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=5.0, help="audio time to simulate")
    ap.add_argument("--churn-every", type=int, default=50, help="every this many ticks a call ends and "
                    "a new one starts (0: never)")
    ap.add_argument("--threads", type=int, default=1, help="kernel threads for both engines")
    ap.add_argument("--no-sleep", action="store_true", help="do not wait for frames: compute only")
    ap.add_argument("--no-ort", action="store_true", help="fastlstm only")
    args = ap.parse_args(argv)

    spec = make_spec(args.hidden, args.input)
    fastlstm.set_num_threads(args.threads)
    engine = fastlstm.Engine(spec)
    pool = fastlstm.StreamPool(engine)
    ort_streams = None if args.no_ort else OrtStreams(spec, args.threads)
    for _ in range(args.streams):
        pool.open()
        if ort_streams:
            ort_streams.open()
    ticks = int(round(args.seconds * 1000 / args.frame_ms))
    frame_s = args.frame_ms / 1000
    rng = np.random.default_rng(0)
    frames = rng.standard_normal((64, args.streams, args.input)).astype(np.float32)

    # warm up (compilation, first-call allocations) outside the measured loop, then start fresh
    for t in range(20):
        pool.step(frames[t % 64])
        if ort_streams:
            ort_streams.step(frames[t % 64])

    engines = {"fastlstm": pool.step}
    if ort_streams:
        engines["onnxruntime"] = ort_streams.step
    compute = {name: np.empty(ticks) for name in engines}
    lag = np.empty(ticks)
    max_diff = 0.0
    start = time.perf_counter() + frame_s
    for t in range(ticks):
        due = start + t * frame_s  # the frame for tick t is complete at `due`
        if not args.no_sleep:
            while (ahead := due - time.perf_counter()) > 0:
                time.sleep(ahead if ahead > 0.002 else 0)  # coarse sleep, then yield until due
        lag[t] = max(time.perf_counter() - due, 0.0) if not args.no_sleep else 0.0
        if args.churn_every and t and t % args.churn_every == 0:  # a call ends, a new call starts
            row = int(rng.integers(args.streams))
            pool.close(pool.ids[row])
            pool.open()
            if ort_streams:
                ort_streams.close(row)
                ort_streams.open()
        x = frames[t % 64]
        order = list(engines) if t % 2 == 0 else list(engines)[::-1]
        outputs = {}
        for name in order:
            t0 = time.perf_counter()
            outputs[name] = engines[name](x)
            compute[name][t] = time.perf_counter() - t0
        if ort_streams:
            max_diff = max(max_diff, float(np.max(np.abs(outputs["fastlstm"] - outputs["onnxruntime"]))))

    audio = ticks * frame_s
    print(f"{args.streams} streams, LSTM I={args.input} H={args.hidden}, {ticks} frames of {args.frame_ms:g} ms "
          f"({audio:g} s of audio), churn every {args.churn_every} ticks, {args.threads} thread(s)")
    if not args.no_sleep:
        print(f"{'wake-up lag':12s} {percentiles(lag)}")
    for name, seconds in compute.items():
        misses = int(np.sum(lag + seconds > frame_s))
        print(f"{name:12s} {percentiles(seconds)}   RTF {seconds.sum() / audio:.4f}   "
              f"per stream-frame {np.median(seconds) / args.streams * 1e6:6.2f} us   deadline misses {misses}")
    if ort_streams:
        ratio = np.median(compute["onnxruntime"]) / np.median(compute["fastlstm"])
        print(f"median tick onnxruntime / fastlstm = {ratio:.2f} (> 1: fastlstm is faster);  "
              f"max |fastlstm - onnxruntime| = {max_diff:.2e}")


if __name__ == "__main__":
    main()
