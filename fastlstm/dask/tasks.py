"""What runs on a worker: the per-partition / per-block functions the lazy collections map.

They receive the model's path (a short string in the task graph), take the process's cached Engine,
cap the kernels' threads (fastlstm.set_num_threads is process-wide; Dask threads running tasks at the
same time each run their kernel calls on their own thread: threads.py) and run the batches.
"""

from __future__ import annotations

import ctypes
import functools
import os

import numpy as np

from ..api import set_num_threads
from . import files
from .batching import as_sequence, output_width, run_batched
from .engines import engine_for
from .files import read_input


def use_threads(threads: int) -> None:
    """Kernel threads for this worker process's run() calls (at most the cores it may use); the first call in a
    process also keeps run()'s work buffers in the heap (keep_work_buffers)."""
    from ..threads import MAX_THREADS

    keep_work_buffers()
    set_num_threads(min(threads, MAX_THREADS))


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit
TRIM_THRESHOLD = 128 << 20


@functools.cache  # once per process
def keep_work_buffers() -> None:
    """Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, and setting it also fixes glibc's mmap
    threshold at 128 KiB: every run() call's work buffer (T * B * 4H floats: 26 MB at T = 200, B = 32, H = 256)
    is then a fresh mapping whose pages fault in again on every call, and a worker scored 25-30% slower than
    the same loop in a plain process (AMD EPYC Zen 3, bench/dask_scaling.py). Buffers up to 32 MiB come from
    the heap again after this, and up to 128 MiB of freed heap stays mapped between tasks."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def score_partition(items: list, model_path: str, partition: int, batch_size: int, threads: int) -> list:
    """A bag partition: items (T_i, I) arrays, or (key, array) pairs -> outputs (T_i, D*Hout), or (key, output)."""
    engine = engine_for(model_path, on_worker=True)
    use_threads(threads)
    items = list(items)
    keyed = [isinstance(item, tuple) and len(item) == 2 for item in items]
    sequences = []
    for k, item in enumerate(items):
        name = f"item {item[0]!r}" if keyed[k] else f"item {k} of partition {partition}"
        sequences.append(as_sequence(item[1] if keyed[k] else item, engine.input_size, name))
    outputs = run_batched(engine, sequences, batch_size)
    return [(item[0], y) if keyed[k] else y for k, (item, y) in enumerate(zip(items, outputs, strict=True))]


def score_block(block: np.ndarray, model_path: str, batch_size: int, threads: int) -> np.ndarray:
    """A dask.array block x (n, T, I) -> y (n, T, D*Hout) float32 (its rows batched like a bag's)."""
    engine = engine_for(model_path, on_worker=True)
    use_threads(threads)
    n, T, _ = block.shape
    if n == 0 or T == 0:
        return np.zeros((n, T, output_width(engine)), dtype=np.float32)
    x = np.ascontiguousarray(block, dtype=np.float32)  # (n, T, I); the dtype was checked on the client
    return np.stack(run_batched(engine, list(x), batch_size))


def score_file_group(jobs: list[tuple[str, str]], model_path: str, batch_size: int,
                     threads: int) -> list[tuple[str, int]]:
    """Score (source, target) file pairs as one batch job and write each target atomically.

    Targets already present are not redone (a task retried after its worker died finishes only the
    rest). Returns (target, sequences in it) for every pair.
    """
    engine = engine_for(model_path, on_worker=True)
    use_threads(threads)
    pending = [(source, target) for source, target in jobs if not os.path.exists(target)]
    contents = [read_input(source, engine.input_size) for source, _ in pending]  # per file {name: array}
    sequences = [seq for arrays in contents for array in arrays.values() for seq in _rows(array)]
    outputs = iter(run_batched(engine, sequences, batch_size))
    counts = {}
    for (_, target), arrays in zip(pending, contents, strict=True):
        results = {name: _gather(array, outputs, output_width(engine)) for name, array in arrays.items()}
        files.write_output(target, results)  # looked up at call time: tests wrap it to kill a worker mid-write
        counts[target] = sum(1 if a.ndim == 2 else a.shape[0] for a in arrays.values())
    return [(target, counts[target] if target in counts else files.sequences_in(target)) for _, target in jobs]


def _rows(array: np.ndarray) -> list[np.ndarray]:
    """An input array's sequences, as float32 (T, I) arrays."""
    x = np.ascontiguousarray(array, dtype=np.float32)
    return [x] if x.ndim == 2 else list(x)


def _gather(array: np.ndarray, outputs, width: int) -> np.ndarray:
    """The next outputs for `array`, in its layout: (T, O) for (T, I), (N, T, O) for (N, T, I)."""
    if array.ndim == 2:
        return next(outputs)
    n, T, _ = array.shape
    return np.stack([next(outputs) for _ in range(n)]) if n else np.zeros((0, T, width), dtype=np.float32)
