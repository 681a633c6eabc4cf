"""`fastlstm warmup`: compile the kernels into the cache ahead of time (for a deployment image, a cluster
node or a CI cache), so the first run() / step() of a real model only loads them.

A model needs one compiled kernel: the default-cell one for every model whose cells are sigmoid/tanh/tanh
without peepholes or clip, the general one otherwise, and each again with the layers around the LSTM for a
whole model (kernels/entry.py). Sizes, layers, batch, threads, projections and which layers a whole model
has are run-time values, so four tiny models compile everything any fp32 model can use; each weight type
below fp32 (int8, fp16, bf16) is four more.
"""

from __future__ import annotations

import time

import numpy as np

from .engine import Engine
from .kernels.cache import cache_directory
from .kernels.target import TARGET
from .layers import Embedding, Linear
from .quantize import check_weights_name, quantize
from .spec import CellOptions, DirectionSpec, ModelSpec


def _tiny_spec(general: bool, whole: bool) -> ModelSpec:
    rng = np.random.default_rng(0)
    H, I = 8, 4
    ds = DirectionSpec(W=rng.normal(size=(4 * H, I)), R=rng.normal(size=(4 * H, H)), b=np.zeros(4 * H),
                       peephole=rng.normal(size=(3, H)) if general else None,
                       options=CellOptions.make(clip=3.0) if general else CellOptions())
    spec = ModelSpec(I, H, 1, 1, 0, [[ds]])
    if whole:  # token ids in, a head out: every layer kernel is in the same compiled kernel
        spec.pre, spec.post = [Embedding(rng.normal(size=(5, I)))], [Linear(rng.normal(size=(5, H)), None)]
    return spec.validate()


def warmup(general: bool = True, weights=("fp32",)) -> dict:
    """Compile (or load) the default-cell kernels (bare LSTM and whole model) of each weight type in `weights`
    ("fp32", "int8", "fp16", "bf16": the LSTM's stored W and R, one compiled variant each), and the
    general-cell ones when `general`; returns what was done and how long it took."""
    done = {}
    kinds = (("default cell", False, False), ("general cell", True, False), ("whole model", False, True),
             ("whole model, general cell", True, True))
    types = [check_weights_name(w) for w in dict.fromkeys(weights)]  # every name checked before any compile
    for weight_type in types:
        for kind, use_general, whole in kinds:
            if use_general and not general:
                continue
            name = kind if weight_type == "fp32" else f"{kind} ({weight_type})"
            done[name] = _compile(quantize(_tiny_spec(use_general, whole), weight_type), whole)
    return {"cpu": TARGET.cpu, "isa": TARGET.isa, "lanes": TARGET.lanes, "cache": str(cache_directory()),
            "seconds": done}


def _compile(spec: ModelSpec, whole: bool) -> float:
    """Seconds to compile (or load) the kernel of spec's variant, through run() and step()."""
    start = time.perf_counter()
    eng = Engine(spec)
    if whole:
        eng.run(np.zeros((2, 1), np.int64))
        eng.step(1, eng.new_state())
    else:
        eng.run(np.zeros((2, 1, eng.input_size), np.float32))
        eng.step(np.zeros(eng.input_size, np.float32), eng.new_state())
    return time.perf_counter() - start
