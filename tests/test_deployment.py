"""What a deployment relies on besides the numbers: a step that allocates nothing with out=, loading a model
without a second copy of it in memory, the kernel cache outside the package, `fastlstm warmup`, and the
kernel plan the host gets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from specs import random_spec

import fastlstm
from fastlstm.kernels.target import TARGET, decide

PACKAGE = Path(fastlstm.__file__).resolve().parent


def _peak_growth(fn, calls: int) -> int:
    """Bytes the traced peak rises above the memory in use before `calls` calls of fn (after a warm-up); and
    nothing may stay allocated after them."""
    for _ in range(10):
        fn()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(calls):
            fn()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 256, f"{after - before} bytes stayed allocated"
    return peak - before


def test_step_with_out_allocates_no_array():
    """A real-time audio thread must not allocate buffers: step(x, state, out=buf) allocates no array, even
    transiently, and nothing stays allocated. (Python's call machinery still takes and returns a few small
    objects from CPython's object pools per call, the argument tuple: under 1 KiB of peak here.) The same
    loop without out= allocates each (1024,) float32 result, 4 KiB, which the measurement must see."""
    eng = fastlstm.Engine(random_spec(40, 1024, seed=1))
    x, st, out = np.ones(40, np.float32), eng.new_state(), np.empty(1024, np.float32)
    batch_x, batch_st, batch_out = np.ones((4, 40), np.float32), eng.new_state(4), np.empty((4, 1024), np.float32)
    assert _peak_growth(lambda: eng.step(x, st, out=out), 500) < 1024
    assert _peak_growth(lambda: eng.step(batch_x, batch_st, out=batch_out), 200) < 1024
    assert _peak_growth(lambda: eng.step(x, st), 50) >= 4096


def test_whole_model_step_with_out_allocates_no_array():
    """A whole model's step is one kernel call whose scratch (the layers' rows, the token ids of step(int)) is
    in the State: with out= it allocates no array either, for a token id, (B,) ids and float frames; without
    out= the measurement sees the (V,) result."""
    from fastlstm.layers import Embedding, LayerNorm, Linear

    rng = np.random.default_rng(2)
    spec = random_spec(32, 256, seed=2)
    spec.pre = [Embedding(rng.normal(size=(1000, 32)))]
    spec.post = [Linear(rng.normal(size=(1000, 256)), rng.normal(size=1000), "log_softmax")]
    eng = fastlstm.Engine(spec.validate())
    st, out = eng.new_state(), np.empty(1000, np.float32)
    ids, batch_st, batch_out = np.array([1, 2, 3], np.int64), eng.new_state(3), np.empty((3, 1000), np.float32)
    assert _peak_growth(lambda: eng.step(7, st, out=out), 500) < 1024
    assert _peak_growth(lambda: eng.step(ids, batch_st, out=batch_out), 200) < 1024
    assert _peak_growth(lambda: eng.step(7, st), 50) >= 4000
    spec = random_spec(16, 64, seed=4)
    spec.pre = [Linear(rng.normal(size=(16, 40)), None, "relu")]
    spec.post = [LayerNorm(np.ones(64), np.zeros(64)), Linear(rng.normal(size=(100, 64)), None, "softmax")]
    frames = fastlstm.Engine(spec.validate())
    x, st, out = np.ones(40, np.float32), frames.new_state(), np.empty(100, np.float32)
    assert _peak_growth(lambda: frames.step(x, st, out=out), 500) < 1024


_LOAD_CHILD = r"""
import json, sys, time
def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
import numpy as np, fastlstm
from fastlstm.spec import DirectionSpec, ModelSpec
# numba's runtime starts on the first kernel call of a process (its own imports, tens of MiB, once): start it
# with a tiny model of the same kind, so that the window below measures what the model itself costs
tiny = ModelSpec(4, 8, 1, 1, 0, [[DirectionSpec(np.zeros((32, 4)), np.zeros((32, 8)), np.zeros(32))]])
fastlstm.Engine(tiny).step(np.zeros(4, np.float32))
rss = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # restart the high-water mark: the peak that follows is the load's
eng = fastlstm.load(sys.argv[1])
eng.step(np.zeros(eng.input_size, np.float32))
print(json.dumps({"peak": status("VmHWM") - rss}))
"""


def test_loading_holds_no_second_copy(tmp_path):
    """Loading packs the memory-mapped file block by block and drops each block's pages once packed: the
    process peaks at about one copy of the weights (target: <= 1.3x the file), not file + packed copy.
    (numba's own runtime, started once per process by the first kernel call, is not the model's cost.)"""
    if not os.path.exists("/proc/self/clear_refs"):
        return  # Linux only (the measurement needs VmHWM resets); the packing is the same elsewhere
    path = tmp_path / "big.fastlstm"
    fastlstm.save(random_spec(1024, 1024, seed=2), path)  # 4H x (I + H) x 2 floats = 32 MiB
    size = path.stat().st_size
    done = subprocess.run([sys.executable, "-c", _LOAD_CHILD, str(path)], capture_output=True, text=True,
                          timeout=600, check=True)
    peak = json.loads(done.stdout.splitlines()[-1])["peak"]
    assert peak <= 1.3 * size, f"load peaked at {peak / size:.2f}x the file ({size} bytes)"


def test_kernel_cache_is_outside_the_package():
    """numba's cache next to the sources would outlive an uninstall inside site-packages (and shadow a later
    editable install as a namespace package): fastlstm's kernels cache in a per-user directory."""
    eng = fastlstm.Engine(random_spec(4, 8, seed=3))
    eng.run(np.zeros((2, 4), np.float32))
    leftovers = [p for p in PACKAGE.rglob("*") if p.suffix in (".nbi", ".nbc")]
    assert not leftovers, leftovers


def test_warmup_command(tmp_path):
    env = {**os.environ, "FASTLSTM_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("NUMBA_CACHE_DIR", None)
    done = subprocess.run([sys.executable, "-m", "fastlstm.cli", "warmup"], capture_output=True, text=True,
                          timeout=900, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"({TARGET.isa}, {TARGET.lanes} lanes)" in done.stdout and "general cell" in done.stdout
    assert any(p.suffix == ".nbi" for p in (tmp_path / "cache").rglob("*")), "nothing was cached"


def test_warmup_of_weight_types_below_fp32():
    """warmup(weights=...) compiles each type's own kernels (its variant marker: plan.py); unknown types are
    refused before anything compiles."""
    from fastlstm.errors import ConversionError
    from fastlstm.warmup import warmup

    done = warmup(general=False, weights=["int8", "fp16"])["seconds"]
    assert set(done) == {"default cell (int8)", "whole model (int8)", "default cell (fp16)", "whole model (fp16)"}
    with pytest.raises(ConversionError, match="unknown weight type 'int4'"):
        warmup(weights=["fp16", "int4"])


def test_plan_follows_what_numba_compiles_for():
    """The vector width comes from numba's target (host or NUMBA_CPU_NAME/FEATURES), never from a guess."""
    assert decide("skylake-avx512", "").lanes == 16
    assert decide("haswell", "").lanes == 8 and decide("haswell", "").isa == "avx2"
    assert decide("znver3", "+avx2,+f16c,-avx512f").lanes == 8
    assert decide("haswell", "+avx2,+avx512f").lanes == 16  # the host's features win over the name
    assert decide("generic", "") == decide("generic", "")._replace(isa="sse", lanes=8, f16c=False)
    assert TARGET.lanes in (8, 16)
