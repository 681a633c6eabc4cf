"""fastlstm.dask.run: a lazy Dask collection of sequences in, the matching lazy collection of outputs out."""

from __future__ import annotations

import os

import numpy as np

from ..errors import InputError
from .batching import DEFAULT_BATCH_SIZE, check_positive, output_width
from .engines import engine_for
from .errors import require_dask
from .tasks import score_block, score_partition


def run(model_path: str | os.PathLike, sequences, *, batch_size: int = DEFAULT_BATCH_SIZE, threads: int = 1):
    """Score every sequence of a Dask collection with the model at `model_path`.

    sequences: a dask.bag of (T_i, I) float arrays (lengths may differ), or of (key, array) pairs,
        -> a dask.bag of y (T_i, D*Hout) float32 (or (key, y)) in the same order;
        or a dask.array (N, T, I) of floats -> a dask.array (N, T, D*Hout) float32, chunked like x along N.
    model_path: a .fastlstm file every worker can read at that absolute path (shared storage, or the
        same file copied to each host; a relative path is resolved on the client). Only the path enters
        the task graph; each worker process loads the file once and keeps the Engine. The client opens
        it too, to check it and learn its sizes.
    batch_size: rows per engine call; a partition's sequences are sorted by length and run in
        batches (outputs bit-identical to running each sequence alone).
    threads: kernel threads per task (default 1: one thread per worker thread suits independent
        sequences; see docs/scale-out.md for when to choose more).
    Nothing runs until the result is computed. Bad items raise InputError naming the item.
    """
    dask = require_dask()
    import dask.array as da
    import dask.bag as db

    model_path = os.path.abspath(model_path)  # workers resolve it themselves: their cwd is not the client's
    check_positive("batch_size", batch_size)
    check_positive("threads", threads)
    engine = engine_for(model_path)  # a bad path or file fails here, before any task runs
    if isinstance(sequences, db.Bag):
        return _run_bag(dask, db, sequences, model_path, batch_size, threads)
    if isinstance(sequences, da.Array):
        return _run_array(sequences, engine, model_path, batch_size, threads)
    raise InputError(f"sequences: expected a dask.bag.Bag of (T, I) arrays or a dask.array.Array (N, T, I), "
                     f"found {type(sequences).__name__}")


def _run_bag(dask, db, bag, model_path: str, batch_size: int, threads: int):
    # one task per partition, told its partition number so an error can name the item
    parts = bag.to_delayed(optimize_graph=True)
    token = dask.base.tokenize(bag, model_path, batch_size, threads)
    score = dask.delayed(score_partition, pure=True)
    return db.from_delayed([score(part, model_path, p, batch_size, threads,
                                  dask_key_name=f"fastlstm-run-{token}-{p}") for p, part in enumerate(parts)])


def _run_array(x, engine, model_path: str, batch_size: int, threads: int):
    I = engine.input_size
    if x.ndim != 3 or x.shape[2] != I:
        raise InputError(f"sequences: expected a dask array (N, T, {I}) (the model's input size is {I}), "
                         f"found shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"sequences: expected a floating point array (float32 preferred), found {x.dtype}")
    x = x.rechunk({1: -1, 2: -1})  # whole sequences in every block: only N is split
    O = output_width(engine)
    return x.map_blocks(score_block, model_path, batch_size, threads, dtype=np.float32,
                        chunks=(x.chunks[0], x.chunks[1], (O,)), token="fastlstm-run",
                        meta=np.empty((0, 0, 0), dtype=np.float32))

