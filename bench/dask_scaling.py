"""Scale-out measurement: fastlstm.dask.run on a LocalCluster of 1 and 2 worker processes against a plain
local loop with the same batching (the figures of docs/scale-out.md).

    python bench/dask_scaling.py                       # 2,000 sequences, T = 200, H = I = 256, 3 rounds
    python bench/dask_scaling.py --sequences 200 --rounds 1   # a quick look

A script, not a pytest file (pytest collects test_*.py only). Every configuration scores the same
corpus split into the same partitions: sequence k is generated from seed k where it is scored (on the
worker, or in the loop), each partition runs through fastlstm.dask.batching.run_batched with numba on
one thread per task, and only a checksum per sequence comes back (no output crosses a process boundary). The
local loop is the same code without Dask. Rounds interleave the configurations (a shared machine
drifts); the table shows the median round and the best. Worker warm-up (loading the model and the
compiled kernels from numba's cache) happens before the timed rounds and is printed apart.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time

import numpy as np

import fastlstm
import fastlstm.dask
from fastlstm.benchmarking.models import make_spec
from fastlstm.dask.batching import run_batched

SEED = 15


def make_sequence(k: int, T: int, I: int) -> np.ndarray:
    """Sequence k of the corpus: x (T, I) float32 ~ N(0, 1)."""
    return np.random.default_rng([SEED, k]).standard_normal((T, I), dtype=np.float32)


def checksum(y: np.ndarray) -> float:
    return float(y[-1].sum(dtype=np.float64))


def local_loop(engine, partitions, T, I, batch_size, threads) -> tuple[float, list[float]]:
    fastlstm.set_num_threads(threads)
    started = time.perf_counter()
    sums = []
    for part in partitions:
        outputs = run_batched(engine, [make_sequence(k, T, I) for k in part], batch_size)
        sums += [checksum(y) for y in outputs]
    return time.perf_counter() - started, sums


def dask_job(client, model_path, n, partition_size, T, I, batch_size) -> tuple[float, list[float]]:
    import dask.bag as db

    started = time.perf_counter()
    sequences = db.from_sequence(range(n), partition_size=partition_size).map(make_sequence, T, I)
    sums = client.compute(fastlstm.dask.run(model_path, sequences, batch_size=batch_size).map(checksum)).result()
    return time.perf_counter() - started, sums


def warm_worker(model_path: str, T: int, I: int) -> float:
    """Load the model and the kernels on a worker (as its first task would); seconds taken."""
    started = time.perf_counter()
    engine = fastlstm.dask.engine_for(model_path)
    fastlstm.set_num_threads(1)
    run_batched(engine, [make_sequence(k, T, I) for k in range(3)], 2)
    return time.perf_counter() - started


def peak_rss_mib() -> float:
    """Peak resident memory of this process (a worker's, when run by client.run)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=2000)
    parser.add_argument("--T", type=int, default=200, help="frames per sequence")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--input", type=int, default=None, help="input size (default: = hidden)")
    parser.add_argument("--batch-size", type=int, default=fastlstm.dask.DEFAULT_BATCH_SIZE)
    parser.add_argument("--partitions", type=int, default=16, help="bag partitions (8 per worker at 2 workers)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)  # the schedulers run in this process

    n, T, H = args.sequences, args.T, args.hidden
    I = args.input or H
    partition_size = -(-n // args.partitions)
    partitions = [range(s, min(n, s + partition_size)) for s in range(0, n, partition_size)]
    print(f"corpus: {n} sequences x T={T}, H={H}, I={I}, one layer; {len(partitions)} partitions, "
          f"batch size {args.batch_size}; loadavg {os.getloadavg()[0]:.2f}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        model_path = os.path.join(tmp, "model.fastlstm")
        fastlstm.save(make_spec(H, I), model_path)
        engine = fastlstm.load(model_path)
        local_loop(engine, [range(4)], T, I, args.batch_size, 1)  # compile / load the kernels here first

        clusters = {}  # (worker processes, threads per worker) -> (cluster, client)
        for workers, threads in ((1, 1), (2, 1), (1, 2)):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                                   dashboard_address=":0", silence_logs=logging.ERROR)
            client = Client(cluster)
            client.wait_for_workers(workers)
            warm = client.run(warm_worker, model_path, T, I)
            dask_job(client, model_path, 4 * workers * threads, 2, T, I, args.batch_size)  # first-job costs
            print(f"{workers} worker(s) x {threads} thread(s): warm-up per worker (model load + kernel cache) "
                  f"{', '.join(f'{s:.2f} s' for s in warm.values())}", flush=True)
            clusters[workers, threads] = (cluster, client)

        times: dict[str, list[float]] = {}
        reference = None
        for r in range(args.rounds):
            runs = {
                "local loop, 1 thread": lambda: local_loop(engine, partitions, T, I, args.batch_size, 1),
                "dask, 1 worker": lambda: dask_job(clusters[1, 1][1], model_path, n, partition_size, T, I,
                                                   args.batch_size),
                "dask, 2 workers": lambda: dask_job(clusters[2, 1][1], model_path, n, partition_size, T, I,
                                                    args.batch_size),
                "dask, 1 worker x 2 threads": lambda: dask_job(clusters[1, 2][1], model_path, n, partition_size,
                                                               T, I, args.batch_size),
                "local loop, 2 numba threads": lambda: local_loop(engine, partitions, T, I, args.batch_size, 2),
            }
            for name, job in runs.items():
                seconds, sums = job()
                times.setdefault(name, []).append(seconds)
                if reference is None:
                    reference = sums
                elif sums != reference:
                    print(f"error: {name} gave different outputs than the local loop", file=sys.stderr)
                    return 1
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()) +
                  f"; loadavg {os.getloadavg()[0]:.2f}", flush=True)
        rss = clusters[2, 1][1].run(peak_rss_mib)
        print(f"peak resident memory per worker (2 workers): {', '.join(f'{m:.0f} MiB' for m in rss.values())}")
        for cluster, client in clusters.values():
            client.close()
            cluster.close()

    median = {name: statistics.median(v) for name, v in times.items()}
    best = {name: min(v) for name, v in times.items()}
    print(f"\nsequences/s (median of {args.rounds} rounds; best round in brackets), outputs identical in "
          f"every configuration")
    print("| configuration | seconds | sequences/s | frames/s |")
    print("|---|---|---|---|")
    for name in times:
        print(f"| {name} | {median[name]:.2f} ({best[name]:.2f}) | {n / median[name]:,.0f} ({n / best[name]:,.0f}) "
              f"| {n * T / median[name]:,.0f} |")
    one_vs_local = median["local loop, 1 thread"] / median["dask, 1 worker"]
    two_vs_one = median["dask, 1 worker"] / median["dask, 2 workers"]
    print(f"\n2 workers / 1 worker throughput: {two_vs_one:.2f}x (target >= 1.7x)")
    print(f"1 worker / local loop throughput: {one_vs_local:.2f} (target >= 0.90)")
    print(f"best rounds: {best['dask, 1 worker'] / best['dask, 2 workers']:.2f}x and "
          f"{best['local loop, 1 thread'] / best['dask, 1 worker']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
