"""fastlstm.dask.score_files: score .npy/.npz files on a Dask cluster, one output file per input.

Resumable: an output is only ever renamed into place complete (files.write_output), so outputs that
exist are finished; a rerun skips them and scores the rest. Files go to the workers in groups (a few
per task, so small files still batch well), at least ~4 groups per worker thread for balance.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from .batching import DEFAULT_BATCH_SIZE, check_positive
from .engines import engine_for
from .errors import ClusterError, require_dask
from .files import FileJob, find_inputs, partial_files
from .tasks import score_file_group

GROUP_BYTES = 32 << 20  # input bytes per task at most
GROUP_FILES = 256  # files per task at most (progress moves, a lost task redoes little)
GROUPS_PER_SLOT = 4


@dataclass
class ScoreSummary:
    files: int  # inputs found
    skipped: int  # already scored by an earlier run
    scored: int  # written by this run
    sequences: int  # sequences in the files written by this run
    seconds: float


def score_files(model_path: str | os.PathLike, inputs: list[str], outdir: str | os.PathLike, *, client=None,
                batch_size: int = DEFAULT_BATCH_SIZE, threads: int = 1,
                progress: Callable[[int, int], None] | None = None) -> ScoreSummary:
    """Score every input file (a .npy/.npz, or a directory of them) into `outdir` on the cluster of
    `client` (default: the current distributed client). progress(done, total) is called as files finish.
    Model and input paths must be readable by the workers at the same (absolute) path."""
    require_dask()
    from distributed import as_completed, get_client
    from distributed.scheduler import KilledWorker

    check_positive("batch_size", batch_size)
    check_positive("threads", threads)
    model_path = os.path.abspath(model_path)
    engine_for(model_path)  # a bad model fails here, before any task runs
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    jobs = find_inputs([os.fspath(p) for p in inputs], os.fspath(outdir))
    todo = [job for job in jobs if not os.path.exists(job.target)]
    _remove_partials(todo)  # temporaries of a run that was killed
    if client is None:
        try:
            client = get_client()
        except ValueError:
            raise ClusterError("no Dask client: start one (distributed.Client(...)) or pass client=") from None
    started = time.perf_counter()
    slots = max(1, sum(client.nthreads().values()))
    futures = [client.submit(score_file_group, [(job.source, job.target) for job in group], model_path,
                             batch_size, threads, pure=False) for group in group_jobs(todo, slots)]
    done = sequences = 0
    if progress:
        progress(0, len(todo))
    try:
        for future in as_completed(futures):
            written = future.result()  # re-raises the worker's error (InputError naming the file, ...)
            done += len(written)
            sequences += sum(n for _, n in written)
            if progress:
                progress(done, len(todo))
    except KilledWorker as exc:
        raise ClusterError(f"workers died repeatedly while scoring ({exc}); out of memory? "
                           f"Fewer workers per host or a smaller batch size may help") from None
    finally:
        client.cancel(futures)
        _remove_partials(todo)  # left by workers killed mid-write (their task was redone elsewhere)
    return ScoreSummary(len(jobs), len(jobs) - len(todo), done, sequences, time.perf_counter() - started)


def group_jobs(jobs: list[FileJob], slots: int) -> list[list[FileJob]]:
    """Consecutive jobs in groups of at most GROUP_FILES files and ~total/(GROUPS_PER_SLOT*slots) bytes."""
    total = sum(job.size for job in jobs)
    budget = max(1, min(GROUP_BYTES, total // (GROUPS_PER_SLOT * slots)))
    groups: list[list[FileJob]] = []
    current, current_bytes = [], 0
    for job in jobs:
        if current and (current_bytes + job.size > budget or len(current) >= GROUP_FILES):
            groups.append(current)
            current, current_bytes = [], 0
        current.append(job)
        current_bytes += job.size
    if current:
        groups.append(current)
    return groups


def _remove_partials(jobs: list[FileJob]) -> None:
    for job in jobs:
        for path in partial_files(job.target):
            try:
                os.unlink(path)
            except FileNotFoundError:  # a writer finished (renamed it) meanwhile
                pass

