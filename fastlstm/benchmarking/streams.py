"""Streaming rows of `fastlstm bench`: batched step, and two Python threads sharing one engine.

Batched step. `eng.step(x (B, I), state)` for B = 1, 4, 16, 64 next to ONNX Runtime (a T = 1 session.run at
batch B feeding Y_h / Y_c back), PyTorch (nn.LSTM on a (1, B, I) input with its (h, c)) and the proxy
([W | R] @ [x ; h] with B columns), timed per call; per stream = per call / B. Two more fastlstm members show
what the calls around the kernel cost:
    fastlstm (1, I)   B = 1 with a 2-D frame (the (I,) frame is the plain "fastlstm" member)
    fastlstm pool     StreamPool.step with B open streams
The rows run at the issue's reference point (H = 128, I = 40: speech features) and at the sweep's H (I = H).

Two Python threads. Each of two Python threads steps its own stream of one shared Engine (threads.py runs a
call on its caller's thread alone while another Python thread is inside a kernel), against the same frames
stepped serially on one thread; both at each thread budget of the sweep. Every step writes into the stream's
own output buffer (out=), so the figure is the kernels' and the GIL's, not the allocator's.
"""

from __future__ import annotations

import contextlib
import threading
import time

import numpy as np

from . import measure
from .models import BenchModel, make_input, make_spec
from .peers import PROXY, FastLSTM, make_peers

CHECK_FRAMES = 16  # frames of the accuracy check (every member steps them from a zero state)
ONE_STREAM = "fastlstm"
FRAME_2D, POOL = "fastlstm (1, I)", "fastlstm pool"


class FastLSTMFrame2D(FastLSTM):
    """fastlstm stepping a (1, I) frame at B = 1 (the plain member passes (I,))."""

    name = FRAME_2D

    def _frame(self, x_t):
        return np.ascontiguousarray(x_t)


class FastLSTMPool(FastLSTM):
    """StreamPool.step on B open streams: one (B, I) frame per call."""

    name = POOL

    def prepare(self, model, threads, x):
        from fastlstm import StreamPool

        super().prepare(model, threads, x)
        self.pool = StreamPool(self.engine)
        for _ in range(self.batch):
            self.pool.open()

    def _frame(self, x_t):
        return np.ascontiguousarray(x_t)

    def reset(self):
        self.pool.state.zero_()

    def step(self):
        return self.pool.step(self._x_t)


def step_peers(B: int) -> dict:
    """The members of a batched-step row: fastlstm (+ its 2-D frame at B = 1, + its StreamPool), ORT, PyTorch,
    the proxy."""
    fp32 = make_peers(weights=("fp32",))
    extra = {FRAME_2D: FastLSTMFrame2D()} if B == 1 else {}
    return {ONE_STREAM: fp32[ONE_STREAM], **extra, POOL: FastLSTMPool(),
            **{name: peer for name, peer in fp32.items() if name != ONE_STREAM}}


def step_points(cfg) -> list[tuple[int, int]]:
    """(H, I) of the batched-step rows: the reference point, then the sweep's H at I = H."""
    sizes = cfg.sizes if cfg.step_sizes is None else cfg.step_sizes
    points = [tuple(cfg.step_reference)] + [(H, H) for H in sizes]
    return list(dict.fromkeys(points))


def measure_batched_step(model: BenchModel, status: dict, B: int, threads: int, cfg) -> dict:
    """One row: every member stepping B streams, interleaved (cli.measure_one), plus per-stream figures."""
    from .cli import measure_one

    peers = step_peers(B)
    for name, peer in peers.items():
        if name not in status:
            status[name] = peer.status()
    rec = measure_one(model, peers, status, "step", B, CHECK_FRAMES, threads, cfg)
    rec["mode"], rec["I"] = "batched_step", model.input_size
    add_per_stream(rec)
    return rec


def add_per_stream(rec: dict) -> None:
    for entry in rec["engines"].values():
        if "median_us" in entry:
            entry["us_per_stream"] = entry["median_us"] / rec["B"]


def batched_step_rows(cfg, status: dict, progress) -> list[dict]:
    """The in-process rows: every (threads, point, B)."""
    models: dict[tuple[int, int], BenchModel] = {}
    records = []
    for threads in cfg.threads:
        for H, I in step_points(cfg):
            model = models.setdefault((H, I), BenchModel(make_spec(H, I)))
            for B in cfg.step_batch:
                rec = measure_batched_step(model, status, B, threads, cfg)
                records.append(rec)
                progress(progress_line(rec))
    return records


def progress_line(rec: dict) -> str:
    def us(name):
        entry = rec["engines"].get(name, {})
        return f"{entry['median_us']:.1f}" if "median_us" in entry else entry.get("status", "-").split(" (")[0]

    where = " own process" if rec.get("process") == "own" else ""
    return (f"batched step H={rec['H']} I={rec['I']} B={rec['B']} threads={rec['threads']}{where}  us/call: "
            + " | ".join(f"{name} {us(name)}" for name in rec["engines"]))


# ---- two Python threads ---------------------------------------------------------------------------
class TwoStreams:
    """Two streams of one engine, `frames` (N, I) each per call: serial() steps stream 0 then stream 1 on the
    calling thread; parallel() steps stream 0 on the calling thread while a helper thread steps stream 1."""

    def __init__(self, engine, frames: np.ndarray):
        self.engine, self.frames = engine, frames
        self.states = [engine.new_state(), engine.new_state()]
        self.outs = [np.empty(engine.output_size, np.float32) for _ in range(2)]  # (Hout,) per stream
        self._go, self._done = threading.Semaphore(0), threading.Semaphore(0)
        self._stop, self._error = False, None
        self._helper = threading.Thread(target=self._serve, name="bench-stream-1", daemon=True)
        self._helper.start()

    def _steps(self, k: int) -> None:
        step, state, out = self.engine.step, self.states[k], self.outs[k]
        for frame in self.frames:
            step(frame, state, out=out)

    def _serve(self) -> None:
        while True:
            self._go.acquire()
            if self._stop:
                return
            try:
                self._steps(1)
            except BaseException as exc:  # handed to the caller of parallel()
                self._error = exc
            self._done.release()

    def serial(self) -> None:
        self._steps(0)
        self._steps(1)

    def parallel(self) -> None:
        self._go.release()
        self._steps(0)
        self._done.acquire()
        if self._error is not None:
            raise self._error

    def identical(self) -> bool:
        """Both streams from zero, concurrently, give bit for bit the serial result (and then state is zero)."""
        results = []
        for run in (self.parallel, self.serial):
            for state in self.states:
                state.zero_()
            run()
            results.append([state.h.copy() for state in self.states] + [state.c.copy() for state in self.states])
        for state in self.states:
            state.zero_()
        return all(np.array_equal(a, b) for a, b in zip(*results, strict=True))

    def close(self) -> None:
        self._stop = True
        self._go.release()
        self._helper.join(timeout=10)


@contextlib.contextmanager
def _uncontended():
    """Serial steps are one Python thread that never shares the kernels: wait out the solo window the last
    two-thread block left (threads.CONTENDED_S), as a process whose threads stepped together long ago would."""
    from fastlstm import threads

    time.sleep(threads.contention_left())
    yield


def python_thread_rows(cfg, progress) -> list[dict]:
    """Two Python threads against serial at H = cfg.pythreads_hidden, for each thread budget of the sweep."""
    import fastlstm

    H, steps = cfg.pythreads_hidden, cfg.pythreads_steps
    engine = fastlstm.Engine(make_spec(H))
    frames = make_input(steps, 1, engine.input_size)[:, 0]  # (N, I)
    previous = fastlstm.get_num_threads()
    records = []
    pair = TwoStreams(engine, frames)
    try:
        for n in cfg.threads:
            fastlstm.set_num_threads(n)
            identical = pair.identical()  # also the warm-up: compiles, starts any team
            candidates = {"serial": measure.Candidate(pair.serial, _uncontended),
                          "two threads": measure.Candidate(pair.parallel, contextlib.nullcontext)}
            timings = measure.interleaved(candidates, cfg.rounds, cfg.block_s, seed=H * 10 + n,
                                          budget_s=cfg.budget_s, min_rounds=cfg.min_rounds)
            rec = {"H": H, "I": engine.input_size, "threads": n, "steps_per_stream": steps, "identical": identical,
                   "engines": {}}
            for name, timing in timings.items():
                entry = timing.to_json()
                entry["us_per_frame"] = entry["median_us"] / (2 * steps)
                entry["frames_per_s"] = 2 * steps * 1e6 / entry["median_us"]
                rec["engines"][name] = entry
            rec["speedup"] = rec["engines"]["serial"]["median_us"] / rec["engines"]["two threads"]["median_us"]
            records.append(rec)
            progress(f"python threads H={H} threads={n}  two threads {rec['speedup']:.2f}x serial"
                     + ("" if identical else "  RESULTS DIFFER"))
    finally:
        pair.close()
        fastlstm.set_num_threads(previous)
    return records


# ---- report -----------------------------------------------------------------------------------------
def _us(entry: dict | None, key: str = "median_us") -> float | None:
    return entry.get(key) if entry and key in entry else None


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 1000 else f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def _cell(entry: dict | None) -> str:
    if entry is None:
        return "-"
    if "median_us" in entry:
        return _fmt(entry["median_us"])
    return entry.get("status", "n/a").split(" (")[0].split(":")[0]


def _step_table(recs: list[dict], one_thread: dict, shared: dict | None) -> tuple[list[str], list[list[str]]]:
    """Rows (H, I, B). one_thread: {(H, I, B): fastlstm us per call at 1 thread (same process kind)};
    shared: {(H, I, B): record in the shared process} for own-process tables, else None."""
    extras = any(FRAME_2D in r["engines"] or POOL in r["engines"] for r in recs)
    threads = recs[0]["threads"]
    headers = ["H", "I", "B", "fastlstm", "ORT", "PyTorch", "proxy", "per stream", "÷ 1 stream", "vs ORT",
               "vs PyTorch", "x proxy"]
    headers += ["(1, I) +us", "pool +us"] if extras else []
    headers += ["vs 1 thread"] if threads > 1 else []
    headers += ["in one process: fastlstm / ORT / PyTorch"] if shared is not None else []
    single = {(r["H"], r["I"]): _us(r["engines"].get(ONE_STREAM)) for r in recs if r["B"] == 1}
    rows = []
    for r in recs:  # in measurement order: the reference point first, B ascending
        e = r["engines"]
        ours = _us(e.get(ONE_STREAM))
        per_stream = ours / r["B"] if ours else None
        row = [str(r["H"]), str(r["I"]), str(r["B"]), *(_cell(e.get(n)) for n in (ONE_STREAM, "onnxruntime", "torch",
                                                                                   PROXY))]
        row += [_fmt(per_stream), _ratio(per_stream, single.get((r["H"], r["I"]))),
                _ratio(_us(e.get("onnxruntime")), ours), _ratio(_us(e.get("torch")), ours),
                _ratio(ours, _us(e.get(PROXY)))]
        if extras:
            frame2d, pool = _us(e.get(FRAME_2D)), _us(e.get(POOL))
            row += [f"{frame2d - ours:+.2f}" if frame2d and ours else "-",
                    f"{pool - ours:+.2f}" if pool and ours else "-"]
        if threads > 1:
            row.append(_ratio(one_thread.get((r["H"], r["I"], r["B"])), ours))
        if shared is not None:
            other = shared.get((r["H"], r["I"], r["B"]), {"engines": {}})["engines"]
            row.append(" / ".join(_ratio(_us(other.get(n)), _us(e.get(n))) for n in (ONE_STREAM, "onnxruntime",
                                                                                       "torch")))
        rows.append(row)
    return headers, rows


def sections(results: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """[(title, headers, rows)]: batched step per thread count (in one process, and for 2+ threads each
    engine in its own process), then two Python threads."""
    shared = results.get("batched_step", [])
    own = [r for r in results.get("isolated", []) if r["mode"] == "batched_step"]
    key = lambda r: (r["H"], r["I"], r["B"])  # noqa: E731
    one_thread = {key(r): _us(r["engines"].get(ONE_STREAM)) for r in shared if r["threads"] == 1}
    out = []
    for threads in sorted({r["threads"] for r in shared} | {r["threads"] for r in own}):
        mine = [r for r in shared if r["threads"] == threads]
        theirs = [r for r in own if r["threads"] == threads]
        if theirs:
            by_key = {key(r): r for r in mine}
            out.append((f"Batched step, {threads} threads, each engine in its own process: us per call "
                        "(x (B, I), state carried)", *_step_table(theirs, one_thread, by_key)))
        if mine:
            where = "" if threads == 1 else ", all engines in one process"
            out.append((f"Batched step, {threads} thread(s){where}: us per call (x (B, I), state carried)",
                        *_step_table(mine, one_thread, None)))
    rows = []
    for r in results.get("python_threads", []):
        serial, two = r["engines"]["serial"], r["engines"]["two threads"]
        rows.append([str(r["H"]), str(r["threads"]), _fmt(serial["frames_per_s"]), _fmt(two["frames_per_s"]),
                     f"{r['speedup']:.2f}x", "yes" if r["identical"] else "NO"])
    if rows:
        out.append(("Two Python threads, one engine, a stream each: frames/s against the same frames stepped "
                    "serially", ["H", "thread budget", "serial", "two threads", "speedup", "bit-identical"], rows))
    return out


def summary_lines(results: dict) -> list[str]:
    lines = []
    recs = [r for r in results.get("batched_step", []) if r["threads"] == 1]
    for H, I in dict.fromkeys((r["H"], r["I"]) for r in recs):
        at = {r["B"]: r["engines"] for r in recs if (r["H"], r["I"]) == (H, I)}
        single = _us(at.get(1, {}).get(ONE_STREAM))
        parts = [f"B={B} {_us(e.get(ONE_STREAM)) / B / single:.2f}x" for B, e in sorted(at.items())
                 if B > 1 and single and _us(e.get(ONE_STREAM))]
        if parts:
            lines.append(f"Batched step, H={H} I={I}, 1 thread: per stream " + ", ".join(parts)
                         + " of a single-stream step")
        break  # the reference point is enough for a summary
    for r in results.get("python_threads", []):
        lines.append(f"Two Python threads, H={r['H']}, thread budget {r['threads']}: {r['speedup']:.2f}x the serial "
                     "throughput" + ("" if r["identical"] else " (RESULTS DIFFER from serial)"))
    return lines
