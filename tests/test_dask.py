"""fastlstm.dask on a distributed.LocalCluster of 2 worker processes (started and stopped here).

Outputs are compared bit for bit with a local eng.run loop over the same sequences. The last test
kills a worker process while it is writing an output file; the job must still finish with every
output present, identical, and no partial file left.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from specs import random_spec

import fastlstm
import fastlstm.dask
from fastlstm.dask import engines
from fastlstm.errors import FormatError, InputError

da = pytest.importorskip("dask.array")  # the test extra installs dask: a missing one skips loudly (-ra)
db = pytest.importorskip("dask.bag")
distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")

JOB_TIMEOUT = 240  # seconds; generous for a loaded 2-core machine (a job here takes ~1 s)
INPUT_SIZE = 5


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A 2-layer bidirectional model (sequence_lens matters in both directions) and its local Engine."""
    path = tmp_path_factory.mktemp("dask") / "model.fastlstm"
    fastlstm.save(random_spec(input_size=INPUT_SIZE, hidden_size=24, num_layers=2, num_directions=2, seed=15), path)
    eng = fastlstm.load(path)
    eng.run(np.ones((3, 2, INPUT_SIZE), np.float32), sequence_lens=[3, 1])  # compile here: workers load the cache
    return str(path), eng


@pytest.fixture(scope="module")
def client(model):
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=logging.CRITICAL) as cluster, distributed.Client(cluster) as c:
        c.wait_for_workers(2, timeout=JOB_TIMEOUT)
        yield c
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def corpus(n, seed=0, max_len=60):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(int(rng.integers(1, max_len)), INPUT_SIZE)).astype(np.float32) for _ in range(n)]


def compute(collection, client):
    return client.compute(collection).result(timeout=JOB_TIMEOUT)


def test_bag_outputs_are_bit_identical_to_a_local_loop(model, client, monkeypatch):
    path, eng = model
    sequences = corpus(90)
    # the model travels as a path: the client must never pickle an Engine into the graph
    monkeypatch.setattr(fastlstm.Engine, "__reduce_ex__", lambda *a: pytest.fail("an Engine was pickled"),
                        raising=False)
    outputs = compute(fastlstm.dask.run(path, db.from_sequence(sequences, npartitions=4), batch_size=8), client)
    assert len(outputs) == len(sequences)
    for x, y in zip(sequences, outputs, strict=True):
        assert np.array_equal(y, eng.run(x)[0])
    keyed = compute(fastlstm.dask.run(path, db.from_sequence([(f"call-{k}", x) for k, x in enumerate(sequences)])),
                    client)
    assert [k for k, _ in keyed] == [f"call-{k}" for k in range(len(sequences))]
    assert all(np.array_equal(y, ref) for (_, y), ref in zip(keyed, outputs, strict=True))
    # each worker process loaded the model at most once, however many tasks it ran
    loads = list(client.run(engines.load_count).values())
    assert max(loads) == 1 and len(loads) == 2


def test_array_outputs_are_bit_identical_to_a_local_loop(model, client):
    path, eng = model
    x = np.random.default_rng(3).normal(size=(11, 13, INPUT_SIZE))  # float64: cast like eng.run casts
    lazy = fastlstm.dask.run(path, da.from_array(x, chunks=(4, 7, INPUT_SIZE)), batch_size=3)
    assert lazy.shape == (11, 13, 48) and lazy.dtype == np.float32 and lazy.chunks[0] == (4, 4, 3)
    y = compute(lazy, client)
    assert np.array_equal(y, np.stack([eng.run(row)[0] for row in x]))


def test_bad_items_and_models_give_errors_naming_them(model, client, tmp_path):
    path, _ = model
    good = np.zeros((3, INPUT_SIZE), np.float32)
    bad_items = {
        "wrong size": (np.zeros((3, INPUT_SIZE + 1), np.float32), r"item 1 of partition 1: expected shape \(T, 5\)"),
        "not float": (np.zeros((3, INPUT_SIZE), np.int64), "item 1 of partition 1: expected a floating point array"),
    }
    for bad, message in bad_items.values():
        with pytest.raises(InputError, match=message):
            compute(fastlstm.dask.run(path, db.from_sequence([good, good, good, bad], npartitions=2)), client)
    with pytest.raises(InputError, match="item 'b': expected a floating point array"):
        compute(fastlstm.dask.run(path, db.from_sequence([("a", good), ("b", good.astype(int))])), client)
    with pytest.raises(InputError, match=r"expected a dask array \(N, T, 5\).*found shape \(2, 3, 4\)"):
        fastlstm.dask.run(path, da.zeros((2, 3, 4)))
    with pytest.raises(InputError, match="floating point.*int"):
        fastlstm.dask.run(path, da.zeros((2, 3, INPUT_SIZE), dtype=int))
    with pytest.raises(InputError, match="expected a dask.bag.Bag"):
        fastlstm.dask.run(path, [good])
    with pytest.raises(FormatError, match="cannot read model .*nope.fastlstm: No such file"):
        fastlstm.dask.run(str(tmp_path / "nope.fastlstm"), db.from_sequence([good]))
    # a model the client can read but the workers cannot: the worker's error names the path and its host
    gone = tmp_path / "gone.fastlstm"
    fastlstm.save(random_spec(input_size=INPUT_SIZE, hidden_size=4, seed=1), gone)
    lazy = fastlstm.dask.run(str(gone), db.from_sequence([good]))
    gone.unlink()
    with pytest.raises(FormatError, match=r"cannot read model .*gone.fastlstm \(on host .+\): No such file"):
        compute(lazy, client)


def write_corpus(directory, seed):
    """Variable-length .npy files, a batch-of-equal-lengths .npy and an .npz, under directory/."""
    sequences = corpus(24, seed)
    (directory / "sub").mkdir(parents=True)
    for k, x in enumerate(sequences[:20]):
        np.save(directory / f"seq{k:02d}.npy", x)
    batch = np.random.default_rng(seed).normal(size=(4, 6, INPUT_SIZE)).astype(np.float32)  # (N, T, I)
    np.save(directory / "sub" / "batch.npy", batch)
    np.savez(directory / "sub" / "pair.npz", first=sequences[20], second=sequences[21].astype(np.float64))


def check_outputs(inputs, outputs, eng):
    """Every input has its output, bit-identical to eng.run, and nothing else is in the output tree."""
    expected = sorted(os.path.relpath(os.path.join(r, f), inputs) for r, _, fs in os.walk(inputs) for f in fs)
    found = sorted(os.path.relpath(os.path.join(r, f), outputs) for r, _, fs in os.walk(outputs) for f in fs)
    assert found == expected  # no partial (hidden temporary) file either
    for rel in expected:
        if rel.endswith(".npz"):
            with np.load(inputs / rel) as x, np.load(outputs / rel) as y:
                assert sorted(x.files) == sorted(y.files)
                assert all(np.array_equal(y[k], eng.run(x[k])[0]) for k in x.files)
            continue
        x, y = np.load(inputs / rel), np.load(outputs / rel)
        ref = eng.run(x)[0] if x.ndim == 2 else np.stack([eng.run(row)[0] for row in x])
        assert y.dtype == np.float32 and np.array_equal(y, ref), rel


def test_score_files_is_bit_identical_and_resumable(model, client, tmp_path):
    path, eng = model
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    write_corpus(inputs, seed=5)
    summary = fastlstm.dask.score_files(path, [inputs], outputs, client=client, batch_size=4)
    assert (summary.files, summary.skipped, summary.scored, summary.sequences) == (22, 0, 22, 26)
    check_outputs(inputs, outputs, eng)
    before = (outputs / "seq03.npy").stat().st_mtime_ns
    (outputs / "seq07.npy").unlink()
    (outputs / ".seq07.npy.part-stale.tmp").write_bytes(b"left by a killed run")
    summary = fastlstm.dask.score_files(path, [inputs], outputs, client=client)
    assert (summary.skipped, summary.scored) == (21, 1)
    assert (outputs / "seq03.npy").stat().st_mtime_ns == before  # finished outputs are not redone
    check_outputs(inputs, outputs, eng)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "fastlstm.cli", "score", *map(str, args)], capture_output=True,
                          text=True, timeout=JOB_TIMEOUT)


def test_cli_on_a_running_scheduler(model, client, tmp_path):
    path, eng = model
    inputs = tmp_path / "in"
    write_corpus(inputs, seed=6)
    result = cli(path, inputs, "-o", tmp_path / "out", "--scheduler", client.scheduler.address)
    assert result.returncode == 0, result.stderr
    assert "scored 22 of 22 files (26 sequences" in result.stdout
    check_outputs(inputs, tmp_path / "out", eng)
    np.save(tmp_path / "int.npy", np.zeros((3, INPUT_SIZE), np.int16))
    result = cli(path, tmp_path / "int.npy", "-o", tmp_path / "out-bad", "--scheduler", client.scheduler.address)
    assert result.returncode == 1 and result.stdout == "", result.stderr
    assert result.stderr == (f"fastlstm score: error: {tmp_path}/int.npy: expected floating point sequences "
                             f"(float32 preferred), found int16\n")


def test_cli_errors_are_one_line_naming_the_file(model, client, tmp_path, capsys):
    from fastlstm.cli import main

    path, _ = model
    bad = tmp_path / "bad"
    bad.mkdir()
    np.save(bad / "size.npy", np.zeros((3, INPUT_SIZE + 2), np.float32))
    (bad / "corrupt.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    (bad / "notes.txt").write_text("not an array")
    cases = [
        ((path, bad / "size.npy"), "size.npy: expected shape (T, 5) or (N, T, 5)"),
        ((path, bad / "corrupt.npy"), "corrupt.npy: not a readable .npy file"),
        ((path, bad / "missing.npy"), "missing.npy: No such file or directory"),
        ((path, bad / "notes.txt"), "notes.txt: expected a .npy or .npz file"),
        ((tmp_path / "nope.fastlstm", bad / "size.npy"), "cannot read model"),
        ((bad / "size.npy", bad / "size.npy"), "size.npy: header claims"),  # not a model file
    ]
    for (model_path, source), message in cases:
        code = main(["score", str(model_path), str(source), "-o", str(tmp_path / "out"),
                     "--scheduler", client.scheduler.address])
        out, err = capsys.readouterr()
        assert code == 1 and out == "" and err.count("\n") == 1, err
        assert err.startswith("fastlstm score: error: ") and message in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))


KILLED = "the test killed the worker writing this output"


def stall_on(victim: str, signal_file: str):
    """Installed on every worker: the first writer of `victim` writes half its bytes to the temporary
    file, records its pid in `signal_file` and waits there to be killed. Later writers write normally."""
    from fastlstm.dask import files

    original = files.write_output

    def write_output(target, outputs):
        if os.path.basename(target) != victim or os.path.exists(signal_file):
            return original(target, outputs)
        import io

        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, outputs[""])
        data = buffer.getvalue()

        def chunks():
            yield data[: len(data) // 2]  # larger than the file buffer: it reaches the disk now
            with open(signal_file + ".tmp", "w") as f:
                f.write(str(os.getpid()))
            os.replace(signal_file + ".tmp", signal_file)
            time.sleep(JOB_TIMEOUT * 2)  # the test kills this process first
            raise RuntimeError(KILLED)

        files.write_atomically(target, chunks(), prefix=files.partial_prefix(target))

    files.write_output = write_output


def test_a_worker_killed_mid_write_loses_nothing(model, client, tmp_path):
    path, eng = model
    inputs, outputs, signal_file = tmp_path / "in", tmp_path / "out", str(tmp_path / "victim.pid")
    write_corpus(inputs, seed=7)
    np.save(inputs / "victim.npy", np.random.default_rng(8).normal(size=(300, INPUT_SIZE)).astype(np.float32))
    client.run(stall_on, "victim.npy", signal_file)
    pids = set(client.run(os.getpid).values())
    killed = {}

    def kill_the_stalled_worker():
        deadline = time.monotonic() + JOB_TIMEOUT
        while not os.path.exists(signal_file) and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = int(open(signal_file).read())
        killed["partials"] = [p.name for p in outputs.iterdir() if p.name.startswith(".victim.npy.part-")]
        killed["partial_bytes"] = sum((outputs / p).stat().st_size for p in killed["partials"])
        killed["pid"] = pid
        os.kill(pid, signal.SIGKILL)

    with ThreadPoolExecutor(2) as pool:
        killer = pool.submit(kill_the_stalled_worker)
        job = pool.submit(fastlstm.dask.score_files, path, [inputs], outputs, client=client, batch_size=4)
        killer.result(timeout=JOB_TIMEOUT)
        summary = job.result(timeout=JOB_TIMEOUT)
    assert killed["pid"] in pids and len(killed["partials"]) == 1 and killed["partial_bytes"] > 0
    assert (summary.files, summary.scored, summary.sequences) == (23, 23, 27)
    check_outputs(inputs, outputs, eng)  # every output present and identical, the partial file gone
    client.wait_for_workers(2, timeout=JOB_TIMEOUT)  # the nanny restarted the killed worker
    assert killed["pid"] not in set(client.run(os.getpid).values())
