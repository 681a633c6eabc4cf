"""What the whole-model examples share: export a PyTorch module to ONNX, convert it with `fastlstm convert`,
check fastlstm against PyTorch, time a loop. (Not an example itself.)"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
import warnings

import numpy as np

TOL = 2e-5  # max |ours - PyTorch| / max(max |PyTorch|, 1), the project's accuracy bar
WORK = os.path.join(tempfile.gettempdir(), "fastlstm-examples")
# tests/test_examples.py: every step and check of an example, with seconds of training and timing cut to a
# sliver (the models then learn little; the checks against PyTorch hold all the same)
SMOKE = bool(os.environ.get("FASTLSTM_EXAMPLES_SMOKE"))


def budget_s(full: float) -> float:
    """A training or timing budget: `full` seconds, or a sliver of it in the smoke test."""
    return full / 50 if SMOKE else full


def export_onnx(module, args: tuple, name: str, outputs=("y",)) -> str:
    """torch.onnx.export (the TorchScript exporter) with every axis of the token input dynamic (and the batch
    axis of h0 / c0); returns the .onnx path."""
    import torch

    os.makedirs(WORK, exist_ok=True)
    path = os.path.join(WORK, f"{name}.onnx")
    names = ["x", "h0", "c0"][: len(args)]
    axes = {"x": {a: f"x{a}" for a in range(args[0].dim())}, **{n: {1: "batch"} for n in names[1:]}}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, path, dynamo=False, input_names=names, output_names=list(outputs),
                          dynamic_axes=axes)
    return path


def convert(onnx_path: str, verify: bool = True):
    """`fastlstm convert MODEL.onnx -o MODEL.fastlstm --verify` (the CLI itself), then fastlstm.load."""
    import fastlstm
    from fastlstm.cli import main

    dst = onnx_path[: -len(".onnx")] + ".fastlstm"
    args = ["convert", onnx_path, "-o", dst] + (["--verify"] if verify else [])
    print(f"$ fastlstm {' '.join(args)}")
    if main(args) != 0:
        raise SystemExit("conversion failed")
    engine = fastlstm.load(dst)
    if not (engine.spec.pre or engine.spec.post):
        raise SystemExit("the whole model was not converted (see the note above)")
    return engine


def ort_session(onnx_path: str, threads: int = 1):
    import onnx
    import onnxruntime as ort

    model = onnx.load(onnx_path)
    model.ir_version = min(model.ir_version, 10)  # what onnxruntime reads
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def check(what: str, ours, ref) -> None:
    """Print and enforce the accuracy bar."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    if ours.shape != ref.shape:
        raise SystemExit(f"{what}: shape {ours.shape} != PyTorch's {ref.shape}")
    err = float(np.max(np.abs(ours - ref)) / max(np.max(np.abs(ref)), 1.0))
    print(f"check {what}: max relative error vs PyTorch {err:.2e} ({'ok' if err <= TOL else 'FAILED'})")
    if not err <= TOL:
        raise SystemExit(f"{what}: fastlstm differs from PyTorch by {err:.2e} > {TOL:.0e}")


def per_second(fn, seconds: float = 1.0, warmup: int = 3) -> float:
    """Calls per second of fn() over about `seconds` (after warm-up calls), best of three runs."""
    for _ in range(warmup):
        fn()
    best, budget = 0.0, budget_s(seconds)
    for _ in range(3):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < budget / 3 or n == 0:
            fn()
            n += 1
        best = max(best, n / (time.perf_counter() - t0))
    return best


def table(title: str, unit: str, rates: dict) -> None:
    """rates: engine -> calls/s (or None when it could not run). Ratios are against fastlstm."""
    print(f"\n{title}")
    ours = rates.get("fastlstm")
    for name, rate in rates.items():
        if rate is None:
            print(f"  {name:<14} {'not available':>14}")
            continue
        ratio = "" if name == "fastlstm" or not ours else f"   fastlstm is {ours / rate:.1f}x faster"
        print(f"  {name:<14} {rate:14,.0f} {unit}{ratio}")


def set_threads(n: int = 1) -> None:
    """One thread for every engine, so the comparison is per core."""
    import torch

    import fastlstm

    fastlstm.set_num_threads(n)
    torch.set_num_threads(n)
