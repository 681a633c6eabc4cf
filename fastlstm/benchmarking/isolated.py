"""Multi-threaded figures with each engine in its own process: the comparison issue 12 asks for.

In one process the engines' thread pools (fastlstm's team, ONNX Runtime's, PyTorch's OpenMP, numpy's OpenBLAS)
share the cores, and a pool spinning after its engine's last call holds the core another engine's worker
waits for. The shared-process rows (cli.measure_one) keep idle pools out of their timed blocks
(measure.settle) and stay in the report: a user who runs ORT or PyTorch beside fastlstm meets those. These
rows go further: every engine runs in a child process of its own, so no other engine's pool exists there.

The parent still interleaves the engines round by round (one child per engine, started when first needed and
kept for the whole sweep) but times nothing itself: it asks one child at a time to time a block, and the child
waits until its own pools are idle (measure.settle) before it answers, so the next child starts on quiet cores.
The child warms up, calibrates and times with measure.py exactly as the shared rows do.

Protocol, one JSON object per line: requests on the child's stdin; answers on the child's original stdout,
which it keeps for them alone (fd 1 then points at stderr, so a library printing cannot corrupt an answer):
    {"op": "prepare", "engine", "mode", "H", "I", "B", "T", "threads", "block_s", "crossovers"}
        -> {"calls", "per_call"} | {"error"} | {"unavailable"}
    {"op": "block", "n"} -> {"seconds"}
    {"op": "quit"}

The child's first line is {"ready"} once its engine's package is imported ({"unavailable"} when it cannot be).

    python -m fastlstm.benchmarking.isolated ENGINE     (the child; the parent starts one per engine)
"""

from __future__ import annotations

import json
import os
import random
import select
import subprocess
import sys
import tempfile
import time

from . import measure
from .peers import ENGINES, PROXY
from .streams import CHECK_FRAMES

PREPARE_TIMEOUT_S = 900.0  # model build + warm-up + calibration (a first compile in the child included)
ANSWER_SLACK_S = 60.0  # beyond the expected block time before a child counts as hung
STEP_MODES = ("step", "batched_step")  # one frame per call; "run" and "batched" are T frames per call


# ---- parent side ------------------------------------------------------------------------------------
class Child:
    """One engine's process. ask() sends a request and waits for its answer (or a timeout / the child's end,
    which come back as {"error": ...})."""

    def __init__(self, engine: str):
        env = dict(os.environ)
        if engine != PROXY:  # only the proxy uses numpy's BLAS: no idle BLAS pool anywhere else
            env["OPENBLAS_NUM_THREADS"] = "1"
        self.engine = engine
        self.log = tempfile.TemporaryFile()  # the child's stderr: its last line explains a failure
        self.proc = subprocess.Popen([sys.executable, "-m", "fastlstm.benchmarking.isolated", engine],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=env, bufsize=0)
        self._pending = b""

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def ask(self, timeout_s: float, **request) -> dict:
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
        except OSError:
            return {"error": self._ended()}
        return self.answer(timeout_s)

    def answer(self, timeout_s: float) -> dict:
        """The next answer line (the first one is the child's {"ready"} once its imports are done)."""
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close(kill=True)
                return {"error": f"no answer within {timeout_s:.0f} s (killed)"}
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    return {"error": self._ended()}
                self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        try:
            answer = json.loads(line)
        except ValueError:
            return {"error": f"unreadable answer {line[:80]!r}"}
        return answer if isinstance(answer, dict) else {"error": f"unexpected answer {answer!r:.80}"}

    def _ended(self) -> str:
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        self.log.seek(0)
        lines = [ln for ln in self.log.read().decode(errors="replace").splitlines() if ln.strip()]
        return f"the {self.engine} process ended (exit code {code}): {lines[-1] if lines else 'no message'}"

    def close(self, kill: bool = False) -> None:
        if self.alive and not kill:
            try:
                self.proc.stdin.write(b'{"op": "quit"}\n')
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.alive:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            stream.close()
        self.log.close()


class Isolated:
    """The engines in processes of their own. Use as a context manager: every child ends with it."""

    def __init__(self, status: dict):
        self.names = [*ENGINES, PROXY]
        self.status = {name: status.get(name) for name in self.names}  # None: usable
        self.children: dict[str, Child] = {}
        self._started = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for child in self.children.values():
            child.close()
        self.children.clear()

    def _start(self) -> None:
        """Start every usable engine's process at once (their imports overlap) and wait until all are ready,
        so no import runs beside a timed block."""
        for name in self.names:
            if not self.status[name] and name not in self.children:
                self.children[name] = Child(name)
        for name, child in list(self.children.items()):
            hello = child.answer(PREPARE_TIMEOUT_S)
            if "ready" not in hello:
                self.status[name] = (f"unavailable ({hello['unavailable']})" if "unavailable" in hello
                                     else f"failed: {hello.get('error')}")
                child.close(kill=True)
                del self.children[name]

    def _child(self, name: str) -> Child:
        child = self.children.get(name)
        if child is None or not child.alive:  # it died on an earlier configuration: a fresh one
            child = self.children[name] = Child(name)
            child.answer(PREPARE_TIMEOUT_S)  # its {"ready"}; a failure shows in the answer to the prepare
        return child

    def measure(self, config: dict, cfg, crossovers: dict | None = None) -> dict:
        """One configuration {"mode", "H", "I", "B", "T", "threads"}: every engine in its own process,
        interleaved. Returns a record like cli.measure_one's, with "process": "own" (no accuracy check: the
        shared-process row of the same configuration has it)."""
        rec = {**config, "process": "own", "engines": {}}
        if not self._started:
            self._start()
            self._started = True
        measure.settle()  # the parent's own pools (from the shared rows) idle before any child runs
        calls = self._prepare_all(config, cfg, crossovers, rec)
        timings = self._rounds(calls, cfg, config, rec)
        steps = 1 if config["mode"] in STEP_MODES else config["T"]
        for name, timing in timings.items():
            entry = timing.to_json()
            entry["us_per_step"] = entry["median_us"] / (1 if name == PROXY else steps)
            entry["frames_per_s"] = config["B"] * 1e6 / entry["us_per_step"]
            if config["mode"] == "batched_step":
                entry["us_per_stream"] = entry["median_us"] / config["B"]
            rec["engines"][name] = entry
        return rec

    def _prepare_all(self, config: dict, cfg, crossovers: dict | None, rec: dict) -> dict:
        """Every usable child builds, warms up and calibrates its engine: {name: (calls per block, s per call)};
        the others get their status in rec."""
        calls = {}
        for name in self.names:
            if self.status[name]:
                rec["engines"][name] = {"status": self.status[name]}
                continue
            answer = self._child(name).ask(PREPARE_TIMEOUT_S, op="prepare", engine=name, block_s=cfg.block_s,
                                           crossovers=crossovers, **config)
            if "unavailable" in answer:  # not usable at all: say so everywhere after
                self.status[name] = f"unavailable ({answer['unavailable']})"
                rec["engines"][name] = {"status": self.status[name]}
            elif "error" in answer:
                rec["engines"][name] = {"status": f"failed: {answer['error']}"}
            else:
                calls[name] = (answer["calls"], answer["per_call"])
        return calls

    def _rounds(self, calls: dict, cfg, config: dict, rec: dict) -> dict[str, measure.Timing]:
        """measure.interleaved's loop, each block timed in its engine's process."""
        rounds = rounds_within(cfg, {name: n * per_call for name, (n, per_call) in calls.items()})
        timings = {name: measure.Timing(calls_per_block=n) for name, (n, _) in calls.items()}
        order, rng = list(calls), random.Random(config["H"] * 1000 + config["B"] * 10 + config["threads"])
        for _ in range(rounds):
            rng.shuffle(order)
            for name in [name for name in order if name in timings]:
                n, per_call = calls[name]
                answer = self.children[name].ask(ANSWER_SLACK_S + 20 * n * per_call, op="block", n=n)
                if "seconds" in answer:
                    timings[name].samples.append(answer["seconds"] / n)
                else:  # this engine's figure is lost; the others go on
                    rec["engines"][name] = {"status": f"failed: {answer.get('error')}"}
                    del timings[name]
        return timings


def rounds_within(cfg, block_s_of: dict) -> int:
    """measure.interleaved's rule: slow configurations run fewer rounds, never fewer than cfg.min_rounds."""
    round_s = sum(block_s_of.values())
    if round_s <= 0:
        return cfg.rounds
    return max(cfg.min_rounds, min(cfg.rounds, int(cfg.budget_s / round_s)))


def configurations(cfg, step_points) -> list[dict]:
    """Every multi-threaded configuration of the sweep: the main modes, then batched step."""
    out = []
    for threads in (n for n in cfg.threads if n > 1):
        for H in cfg.sizes:
            modes = [("step", 1, cfg.T), ("run", 1, cfg.T)] + [("batched", B, cfg.T) for B in cfg.batch]
            out += [{"mode": m, "H": H, "I": H, "B": B, "T": T, "threads": threads} for m, B, T in modes]
        out += [{"mode": "batched_step", "H": H, "I": I, "B": B, "T": CHECK_FRAMES, "threads": threads}
                for H, I in step_points for B in cfg.step_batch]
    return out


# ---- report -----------------------------------------------------------------------------------------
_TITLES = {"step": "Step latency, B=1", "run": "Run, B=1", "batched": "Batched run, B={B}"}


def sections(results: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """The main modes measured with each engine in its own process, one table per (mode, B, threads):
    the engines, the ratios, fastlstm against its own 1-thread figure, and each engine's shared-process
    figure against its own-process one."""
    from .report import LABELS, _cell, _num, _ratio, _time

    own = [r for r in results.get("isolated", []) if r["mode"] in _TITLES]
    shared = {(r["mode"], r["H"], r["B"], r["threads"]): r for r in results.get("results", [])}
    out = []
    for mode, B, threads in dict.fromkeys((r["mode"], r["B"], r["threads"]) for r in own):
        recs = [r for r in own if (r["mode"], r["B"], r["threads"]) == (mode, B, threads)]
        value, unit = ("frames_per_s", "frames/s") if mode == "batched" else ("us_per_step", "us per step")
        title = (f"{_TITLES[mode].format(B=B)}, {threads} threads, each engine in its own process: {unit}")
        headers = ["H", *(LABELS[e] for e in (*ENGINES, PROXY)), "vs ONNX Runtime", "vs PyTorch", "x proxy",
                   "vs 1 thread", "in one process: fastlstm / ORT / PyTorch"]
        rows = []
        for r in recs:
            e = r["engines"]
            fast = _time(e.get("fastlstm", {}))
            row = [str(r["H"]), *(_cell(e.get(n, {"status": "-"}), value, _num) for n in (*ENGINES, PROXY))]
            row += [_ratio(_time(e[p]) / fast) if fast and _time(e.get(p, {})) else "-" for p in ENGINES[1:]]
            proxy = _time(e.get(PROXY, {}))
            row.append(_ratio(fast / proxy) if fast and proxy else "-")
            solo = _time(shared.get((mode, r["H"], B, 1), {"engines": {}})["engines"].get("fastlstm", {}))
            row.append(_ratio(solo / fast) if solo and fast else "-")
            beside = shared.get((mode, r["H"], B, threads), {"engines": {}})["engines"]
            row.append(" / ".join(_ratio(_time(beside.get(n, {})) / _time(e.get(n, {})))
                                  if _time(beside.get(n, {})) and _time(e.get(n, {})) else "-" for n in ENGINES))
            rows.append(row)
        out.append((title, headers, rows))
    return out


def summary_lines(results: dict) -> list[str]:
    lines = []
    for title, headers, rows in sections(results):
        parts = []
        for col in ("vs ONNX Runtime", "vs PyTorch", "vs 1 thread"):
            i = headers.index(col)
            vals = [float(r[i][:-1]) for r in rows if r[i].endswith("x")]
            if vals:
                what = "2+ threads vs 1 thread" if col == "vs 1 thread" else col
                parts.append(f"{min(vals):.2f}x-{max(vals):.2f}x {what}")
        if parts:
            lines.append(f"{title.split(':')[0]}: fastlstm " + ", ".join(parts))
    return lines


# ---- child side -------------------------------------------------------------------------------------
def _prepare(request: dict) -> measure.Candidate:
    from .models import BenchModel, make_input, make_spec
    from .peers import make_peers

    engine = request["engine"]
    if engine == "fastlstm" and request.get("crossovers"):
        _use_crossovers(request["crossovers"])
    peer = make_peers(weights=("fp32",))[engine]
    model = BenchModel(make_spec(request["H"], request["I"]))
    x = make_input(request["T"], request["B"], request["I"])  # the shared rows' model and input, same seeds
    peer.prepare(model, request["threads"], x)
    if engine == "fastlstm":  # known now, not measured inside the first timed call
        import fastlstm
        from fastlstm import calibration

        calibration.crossovers(fastlstm.get_num_threads())
    fn = peer.step if request["mode"] in STEP_MODES or engine == PROXY else peer.run
    return measure.Candidate(fn, peer.context)


def _use_crossovers(found: dict) -> None:
    """The parent's thread crossovers, so the child's fastlstm makes the same 1-or-team choice (and does not
    spend its first timed calls measuring them again)."""
    from fastlstm import calibration

    team = int(found["team"])
    calibration.pin(calibration.Crossovers(team, int(found["step"]), int(found["run"]), found["source"]))


def _answer(request: dict, state: dict) -> dict:
    from .models import ConverterMissing

    op = request.get("op")
    try:
        if op == "prepare":
            state["candidate"] = None  # the previous engine goes (its team's workers exit)
            candidate = _prepare(request)
            calls, per_call = measure.calibrate(candidate, request["block_s"])
            state["candidate"] = candidate
            measure.settle()
            return {"calls": calls, "per_call": per_call}
        if op == "block":
            seconds = measure._time_block(state["candidate"], int(request["n"]))
            measure.settle()  # the next engine's child starts on idle cores
            return {"seconds": seconds}
        return {"error": f"unknown request {op!r}"}
    except (ImportError, ConverterMissing) as exc:
        return {"unavailable": str(exc)}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


# What each engine's child imports before it says it is ready (the rest is loaded by its first prepare).
_IMPORTS = {"fastlstm": ("fastlstm",), "onnxruntime": ("onnxruntime", "onnx", "converters"),
            "torch": ("torch", "converters"), PROXY: ("numpy",)}


def child_main(engine: str) -> int:
    import importlib

    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed from here on goes to stderr, never into an answer
    sys.stdout = sys.stderr
    try:
        for module in _IMPORTS.get(engine, ()):
            importlib.import_module(module)
    except ImportError as exc:
        answers.write(json.dumps({"unavailable": str(exc)}) + "\n")
        return 0
    answers.write(json.dumps({"ready": engine}) + "\n")
    state: dict = {"candidate": None}
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("op") == "quit":
            break
        answers.write(json.dumps(_answer(request, state)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1] if len(sys.argv) > 1 else ""))
