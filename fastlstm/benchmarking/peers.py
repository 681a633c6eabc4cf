"""Every engine behind one small interface: prepare, step, run (+ reset, context).

A peer that is not installed (or disabled with FASTLSTM_BENCH_DISABLE=torch,onnxruntime) reports
why through `status()` instead of failing: its column in the report says so and the sweep goes on.

Timing contract: `prepare(model, threads, x)` does all set-up (sessions, tensors, state) outside the
clock; `step()` advances the peer's own stream by one frame (x[0], state carried), `run()` runs the
whole x (T, B, I) from a zero state. Both take no arguments so the timer calls them as they are.
`context()` is entered once around a block of timed calls (torch.inference_mode for PyTorch).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import importlib.util
import os

import numpy as np

DISABLE_ENV = "FASTLSTM_BENCH_DISABLE"
ENGINES = ("fastlstm", "onnxruntime", "torch")
PROXY = "proxy"  # numpy R @ h over the same bytes: the roofline reference, not a competitor
_ALIASES = {"ort": "onnxruntime", "pytorch": "torch"}


def disabled() -> set[str]:
    """Peers named in FASTLSTM_BENCH_DISABLE (comma separated; 'ort' and 'pytorch' are accepted)."""
    names = (n.strip().lower() for n in os.environ.get(DISABLE_ENV, "").split(","))
    return {_ALIASES.get(n, n) for n in names if n}


def version_of(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


class Peer:
    name = ""
    package: str | None = None  # import name that must be installed

    def status(self) -> str | None:
        """None when usable, else a short reason ('not installed', 'disabled by ...')."""
        if self.name.split()[0] in disabled():  # "torch" also disables "torch qint8"
            return f"disabled ({DISABLE_ENV})"
        if self.package and importlib.util.find_spec(self.package) is None:
            return "not installed"
        return None

    def version(self) -> str | None:
        return version_of(self.package or self.name)

    def context(self):
        return contextlib.nullcontext()

    def prepare(self, model, threads: int, x: np.ndarray) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def step(self):
        raise NotImplementedError

    def run(self):
        raise NotImplementedError

    # ---- outputs for the accuracy check (numpy, (T, B, H)) --------------------------------------
    def run_output(self) -> np.ndarray:
        with self.context():
            return np.asarray(self._numpy(self.run()))

    def step_outputs(self, x: np.ndarray) -> np.ndarray:
        """Feed x (T, B, I) frame by frame from a zero state; stack the outputs."""
        self.reset()
        out = []
        with self.context():
            for t in range(x.shape[0]):
                self._x_t = self._frame(x[t])
                out.append(np.array(self._numpy(self.step()), dtype=np.float32).reshape(x.shape[1], -1))
        self._x_t = self._frame(x[0])
        self.reset()
        return np.stack(out)

    def _frame(self, x_t: np.ndarray):
        return x_t

    @staticmethod
    def _numpy(y):
        return y


class FastLSTM(Peer):
    name = "fastlstm"
    package = "fastlstm"

    def prepare(self, model, threads, x):
        import fastlstm
        from fastlstm.threads import MAX_THREADS

        fastlstm.set_num_threads(min(threads, MAX_THREADS))
        set_blas_threads(threads)  # fastlstm uses no BLAS; limited anyway so every row means the same
        self.engine = fastlstm.Engine(self.spec_of(model))
        self.batch = x.shape[1]
        self.x = np.ascontiguousarray(x)
        self._x_t = self._frame(x[0])
        self.state = self.engine.new_state(self.batch)

    def spec_of(self, model):
        return model.spec  # quantized_peers.FastLSTMQuantized: the same weights below fp32

    def _frame(self, x_t):
        x_t = np.ascontiguousarray(x_t)
        return x_t[0] if x_t.shape[0] == 1 else x_t  # batch 1 streams pass one (I,) frame

    def reset(self):
        self.state.zero_()

    def step(self):
        return self.engine.step(self._x_t, self.state)

    def run(self):
        return self.engine.run(self.x)[0]


class OnnxRuntime(Peer):
    name = "onnxruntime"
    package = "onnxruntime"

    def prepare(self, model, threads, x):
        import onnxruntime as ort

        from .models import io_names

        blob = self.onnx_of(model)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
        self.io = io_names(blob)
        T, B, _ = x.shape
        H = model.hidden
        self.zeros = np.zeros((1, B, H), np.float32)
        self.x = np.ascontiguousarray(x)
        self._x_t = self._frame(x[0])
        self.run_feed = {self.io["X"]: self.x, self.io["initial_h"]: self.zeros,
                         self.io["initial_c"]: self.zeros}
        self.step_fetch = [self.io["Y_h"], self.io["Y_c"]]
        self.run_fetch = [self.io["Y"]]
        self.reset()

    def onnx_of(self, model) -> bytes:
        return model.onnx_bytes()  # quantized_peers.OnnxRuntimeInt8: its quantize_dynamic model

    def _frame(self, x_t):
        return np.ascontiguousarray(x_t)[None]  # (1, B, I): a T=1 sequence

    def reset(self):
        self.h = self.zeros.copy()
        self.c = self.zeros.copy()

    def step(self):
        io = self.io
        self.h, self.c = self.session.run(self.step_fetch, {io["X"]: self._x_t, io["initial_h"]: self.h,
                                                            io["initial_c"]: self.c})
        return self.h[0]

    def run(self):
        y = self.session.run(self.run_fetch, self.run_feed)[0]
        return y.reshape(self.x.shape[0], self.x.shape[1], -1)  # (T, 1, B, H) -> (T, B, H)


class Torch(Peer):
    name = "torch"
    package = "torch"

    def prepare(self, model, threads, x):
        import torch

        torch.set_num_threads(threads)
        self.torch = torch
        self.lstm = self.module_of(model)
        T, B, _ = x.shape
        self.zeros = torch.zeros(model.spec.num_layers, B, model.hidden)
        self.x = torch.from_numpy(np.ascontiguousarray(x))
        self._x_t = self._frame(x[0])
        self.reset()

    def module_of(self, model):
        return model.torch_module()  # quantized_peers.TorchDynamic: quantize_dynamic of it

    def context(self):
        return self.torch.inference_mode()

    def _frame(self, x_t):
        return self.torch.from_numpy(np.ascontiguousarray(x_t)[None])

    def reset(self):
        self.h = self.zeros.clone()
        self.c = self.zeros.clone()

    def step(self):
        y, (self.h, self.c) = self.lstm(self._x_t, (self.h, self.c))
        return y

    def run(self):
        return self.lstm(self.x)[0]

    @staticmethod
    def _numpy(y):
        return y.numpy()


class Proxy(Peer):
    """Roofline proxy: numpy BLAS over the same weight bytes an LSTM reads, no cell arithmetic.

    step(): [W | R] @ [x_t ; h] (4H x (I+H) float32, once per frame: what a streamed step must read).
    run(): x @ W.T for the whole sequence (one GEMM) plus T products R @ h (the recurrence's reads).
    """

    name = PROXY
    package = "numpy"

    def prepare(self, model, threads, x):
        set_blas_threads(threads)
        ds = model.spec.layers[0][0]
        self.T, B, I = x.shape
        self.W = np.ascontiguousarray(ds.W)  # (4H, I)
        self.R = np.ascontiguousarray(ds.R)  # (4H, Hout)
        self.WR = np.ascontiguousarray(np.concatenate([ds.W, ds.R], axis=1))  # (4H, I + Hout)
        self.xs = np.ascontiguousarray(x.reshape(-1, I))  # (T*B, I)
        h = np.zeros((self.R.shape[1], B), np.float32)
        self.h = h[:, 0].copy() if B == 1 else h  # (Hout,) or (Hout, B)
        xh = np.concatenate([x[0].T, h])  # (I + Hout, B)
        self.xh = np.ascontiguousarray(xh[:, 0] if B == 1 else xh)

    def reset(self):
        pass

    def step(self):
        return self.WR @ self.xh

    def run(self):
        y = self.xs @ self.W.T
        for _ in range(self.T):
            y = self.R @ self.h
        return y


def make_peers(with_proxy: bool = True, weights=("fp32",)) -> dict[str, Peer]:
    """The fp32 engines (+ the proxy), then each engine's path at the other weight types asked for
    (quantized_peers.BY_WEIGHTS)."""
    from .quantized_peers import quantized_peers

    peers = {p.name: p for p in (FastLSTM(), OnnxRuntime(), Torch())}
    peers.update(quantized_peers(weights))
    if with_proxy:
        peers[PROXY] = Proxy()
    return peers


# ---- BLAS threads (numpy's OpenBLAS), so "threads=1" means one thread for every engine ----------
_BLAS_SETTERS = ("openblas_set_num_threads", "openblas_set_num_threads64_",
                 "scipy_openblas_set_num_threads", "scipy_openblas_set_num_threads64_",
                 "MKL_Set_Num_Threads")
_blas_setter_cache: list | None = None


def _blas_setters() -> list:
    global _blas_setter_cache
    if _blas_setter_cache is None:
        setters = []
        try:
            with open("/proc/self/maps") as maps:
                libs = {line.split()[-1] for line in maps if ".so" in line and
                        ("blas" in line.lower() or "mkl_rt" in line.lower())}
        except OSError:
            libs = set()
        for path in sorted(libs):
            if "torch" in path:  # torch manages its own pool through torch.set_num_threads
                continue
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for symbol in _BLAS_SETTERS:
                fn = getattr(lib, symbol, None)
                if fn is not None:
                    setters.append(fn)
                    break
        _blas_setter_cache = setters
    return _blas_setter_cache


def set_blas_threads(n: int) -> bool:
    """Set numpy's BLAS thread count (OpenBLAS / MKL found among the loaded libraries)."""
    setters = _blas_setters()
    for fn in setters:
        fn(int(n))
    return bool(setters)
