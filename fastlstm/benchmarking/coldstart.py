"""Cold start and load memory, each measured in a fresh Python process per engine.

The child imports the engine, loads the model file and makes a first call (one frame, batch 1),
timing each phase. Memory: RSS after the import, then the peak RSS (VmHWM, its window restarted
after the import) until the first call returns; the difference is what load + first call needed at
their peak. (resource.getrusage's ru_maxrss would be simpler, but on Linux a child inherits the
parent's high-water mark through fork + exec, so it reports the benchmark process's own peak; it
is used only where /proc is missing.)
Repetitions of the engines are interleaved; medians are reported.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Runs in the child. argv[1]: {"engine", "path", "input_size", "hidden", "layers", "x_name"}.
# Prints one JSON line.
_CHILD = r"""
import json, resource, sys, time
import numpy as np

def _proc_status_kib(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None

def peak_kib():
    # VmHWM: this process's own high-water mark. ru_maxrss on Linux carries the parent's peak over
    # fork + exec, so it is only the fallback (KiB on Linux, bytes on macOS).
    hwm = _proc_status_kib("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak

def start_window():
    # RSS now, then restart the high-water mark (Linux: write 5 to clear_refs) so the peak that
    # follows belongs to the load alone; without it, the old peak is the baseline
    rss = _proc_status_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return rss
    except OSError:
        return peak_kib()

a = json.loads(sys.argv[1])
x = np.random.default_rng(0).standard_normal((1, 1, a["input_size"])).astype(np.float32)
t0 = time.perf_counter()
if a["engine"] == "fastlstm":
    import fastlstm
    t1 = time.perf_counter(); rss1 = start_window()
    eng = fastlstm.load(a["path"])
    t2 = time.perf_counter()
    y = eng.step(x[0, 0], eng.new_state(1))
elif a["engine"] == "onnxruntime":
    import onnxruntime as ort
    t1 = time.perf_counter(); rss1 = start_window()
    sess = ort.InferenceSession(a["path"], providers=["CPUExecutionProvider"])
    t2 = time.perf_counter()
    feed = {}
    for inp in sess.get_inputs():
        feed[inp.name] = x if inp.name == a["x_name"] else np.zeros((a["layers"], 1, a["hidden"]), np.float32)
    y = sess.run(None, feed)[0]
elif a["engine"] == "torch":
    import torch
    t1 = time.perf_counter(); rss1 = start_window()
    state = torch.load(a["path"], weights_only=True, map_location="cpu")
    lstm = torch.nn.LSTM(a["input_size"], a["hidden"], num_layers=a["layers"])
    lstm.load_state_dict(state)
    lstm.eval()
    t2 = time.perf_counter()
    with torch.inference_mode():
        y = lstm(torch.from_numpy(x))[0].numpy()
else:
    raise SystemExit("unknown engine " + a["engine"])
t3 = time.perf_counter()
assert np.isfinite(np.asarray(y)).all()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_call_s": t3 - t2,
                  "rss_after_import_kib": rss1, "peak_end_kib": peak_kib()}))
"""


def write_model_files(model, engines, directory: Path) -> dict[str, Path]:
    """The model as each engine's own file: .fastlstm, .onnx, torch state_dict .pt."""
    import fastlstm

    paths = {}
    for engine in engines:
        if engine == "fastlstm":
            paths[engine] = directory / f"model_h{model.hidden}.fastlstm"
            fastlstm.save(model.spec, paths[engine])
        elif engine == "onnxruntime":
            paths[engine] = directory / f"model_h{model.hidden}.onnx"
            paths[engine].write_bytes(model.onnx_bytes())
        elif engine == "torch":
            import torch

            paths[engine] = directory / f"model_h{model.hidden}.pt"
            torch.save(model.torch_module().state_dict(), paths[engine])
    return paths


def run_child(engine: str, path: Path, model, env: dict | None = None, timeout: float = 300) -> dict:
    args = {"engine": engine, "path": str(path), "input_size": model.input_size, "hidden": model.hidden,
            "layers": model.spec.num_layers}
    if engine == "onnxruntime":
        from .models import io_names

        args["x_name"] = io_names(model.onnx_bytes())["X"]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return {"error": lines[-1] if lines else f"exit code {proc.returncode}"}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = wall
    return result


def measure(model, engines, repeats: int, fresh_numba_cache: bool = True, progress=None) -> dict:
    """Cold start of each engine on `model`: medians over `repeats` fresh processes, interleaved.

    Returns {engine: {import_s, load_s, first_call_s, total_s, process_s, load_peak_mib,
    peak_mib, file_mib}}, plus "fastlstm (empty numba cache)" when fresh_numba_cache: the very first
    run after installing, when numba compiles the kernels and fills its cache.
    """
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="fastlstm-bench-") as tmp:
        paths = write_model_files(model, engines, Path(tmp))
        runs: dict[str, list[dict]] = {e: [] for e in engines}
        order = list(engines)
        rng = random.Random(0)
        for _ in range(repeats):
            rng.shuffle(order)
            for engine in order:
                runs[engine].append(run_child(engine, paths[engine], model))
                if progress:
                    progress(engine)
        if fresh_numba_cache and "fastlstm" in engines:
            with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
                key = "fastlstm (empty numba cache)"
                runs[key] = [run_child("fastlstm", paths["fastlstm"], model, env={"NUMBA_CACHE_DIR": cache})]
                paths[key] = paths["fastlstm"]
                if progress:
                    progress(key)
        for engine, results in runs.items():
            out[engine] = _summarise(results, paths[engine].stat().st_size)
    return out


def _summarise(results: list[dict], file_bytes: int) -> dict:
    good = [r for r in results if "error" not in r]
    if not good:
        return {"error": results[0]["error"] if results else "no run"}
    med = {k: statistics.median(r[k] for r in good) for k in good[0]}
    mib = 1 / 1024  # the child reports KiB
    return {
        "import_s": med["import_s"], "load_s": med["load_s"], "first_call_s": med["first_call_s"],
        "total_s": med["import_s"] + med["load_s"] + med["first_call_s"], "process_s": med["process_s"],
        "load_peak_mib": (med["peak_end_kib"] - med["rss_after_import_kib"]) * mib,
        "peak_mib": med["peak_end_kib"] * mib, "file_mib": file_bytes / 2**20, "runs": len(good),
    }
