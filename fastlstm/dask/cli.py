"""`fastlstm score MODEL INPUTS... -o OUTDIR`: the command-line face of score_files.

Without --scheduler it starts a local cluster of worker processes (one kernel thread each) and stops it
at the end; with --scheduler it uses that cluster and leaves it running. A progress bar goes to stderr
when stderr is a terminal; the summary goes to stdout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time

from .batching import check_positive
from .engines import engine_for
from .errors import ClusterError, require_dask
from .files import find_inputs
from .scoring import score_files

CONNECT_TIMEOUT = 30  # seconds to reach a scheduler


def run_score(model: str, inputs: list[str], outdir: str, *, scheduler: str | None = None,
              workers: int | None = None, batch_size: int, threads: int) -> int:
    require_dask()
    check_positive("--workers", 1 if workers is None else workers)
    check_positive("--batch-size", batch_size)
    check_positive("--threads", threads)
    engine_for(model)  # bad model or inputs: fail before a cluster starts
    find_inputs(inputs, outdir)
    with _cluster(scheduler, workers) as client:
        dashboard = getattr(client, "dashboard_link", None) if _has_dashboard() else None
        if dashboard:
            print(f"dashboard: {dashboard}", file=sys.stderr if sys.stderr.isatty() else sys.stdout, flush=True)
        bar = ProgressBar(sys.stderr) if sys.stderr.isatty() else None
        try:
            summary = score_files(model, inputs, outdir, client=client, batch_size=batch_size, threads=threads,
                                  progress=bar.update if bar else None)
        finally:
            if bar:
                bar.close()
    rate = summary.sequences / summary.seconds if summary.seconds > 0 else 0.0
    print(f"scored {summary.scored} of {summary.files} files ({summary.sequences:,} sequences, "
          f"{summary.seconds:.1f} s, {rate:,.0f} sequences/s); {summary.skipped} already done; outputs in {outdir}")
    return 0


@contextlib.contextmanager
def _cluster(scheduler: str | None, workers: int | None):
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        try:
            if workers:
                client.wait_for_workers(workers, timeout=CONNECT_TIMEOUT * 10)
            yield client
        finally:
            client.close()
        return
    n = workers or os.cpu_count() or 1
    # ":0": any free port (a fixed 8787 may be taken by another cluster on this host)
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, silence_logs=logging.CRITICAL,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        yield client


def _has_dashboard() -> bool:
    try:
        import bokeh  # noqa: F401  (the dashboard needs it: pip install bokeh)
    except ImportError:
        return False
    return True


class ProgressBar:
    """[#####.....] done/total files, rate and time left, redrawn in place on a terminal."""

    WIDTH = 30

    def __init__(self, stream):
        self.stream, self.started, self.drawn = stream, time.perf_counter(), False

    def update(self, done: int, total: int) -> None:
        elapsed = time.perf_counter() - self.started
        filled = self.WIDTH * done // total if total else self.WIDTH
        left = f", {elapsed * (total - done) / done:.0f} s left" if done and done < total else ""
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{total} files, "
                          f"{elapsed:.0f} s{left}   ")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
