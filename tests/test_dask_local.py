"""fastlstm.dask without a cluster: batching by length (bit-identical to single runs), the per-process
engine cache, reading and checking input files, and the package without Dask installed."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from specs import random_spec

import fastlstm
from fastlstm.dask import engines, files
from fastlstm.dask.batching import MAX_PADDING, as_sequence, length_batches, run_batched
from fastlstm.errors import FormatError, InputError

SPECS = {
    "one-direction": dict(input_size=5, hidden_size=20, num_layers=2),
    "bidirectional-projected": dict(input_size=4, hidden_size=19, num_layers=2, num_directions=2, proj_size=7),
    "peephole": dict(input_size=3, hidden_size=33, peephole=True),
}


@pytest.mark.parametrize("name", SPECS)
@pytest.mark.parametrize("batch_size", [1, 4, 32])
def test_run_batched_is_bit_identical_to_single_runs(name, batch_size):
    eng = fastlstm.Engine(random_spec(**SPECS[name], seed=len(name)))
    rng = np.random.default_rng(batch_size)
    lengths = [0, 1, 1, 2, 17, 3, 40, 39, 38, 5, 0, 12, 12, 12, 64, 7] + list(rng.integers(1, 50, size=30))
    sequences = [rng.normal(size=(T, eng.input_size)).astype(np.float32) for T in lengths]
    outputs = run_batched(eng, sequences, batch_size)
    width = eng.num_directions * eng.output_size
    for x, y in zip(sequences, outputs, strict=True):
        assert y.shape == (len(x), width) and y.dtype == np.float32 and y.flags.c_contiguous
        if len(x):
            assert np.array_equal(y, eng.run(x)[0])  # bit for bit, not merely close


def test_length_batches_cover_every_row_once_with_bounded_padding():
    lengths = np.random.default_rng(1).integers(0, 300, size=500)
    batches = length_batches(lengths, batch_size=16, max_rows_frames=2000)
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(500))
    for batch in batches:
        longest, rows = lengths[batch].max(), len(batch)
        assert rows <= 16 and (rows == 1 or rows * longest <= 2000)
        assert rows == 1 or rows * longest <= (1 + MAX_PADDING) * lengths[batch].sum()
    assert np.mean([len(b) for b in batches]) > 4  # similar lengths do share batches


def test_as_sequence_names_the_item():
    with pytest.raises(InputError, match=r"item 7: expected shape \(T, 5\).*found \(3, 4\)"):
        as_sequence(np.zeros((3, 4)), 5, "item 7")
    with pytest.raises(InputError, match="item 7: expected a floating point array.*int64"):
        as_sequence(np.zeros((3, 5), np.int64), 5, "item 7")
    with pytest.raises(InputError, match="item 7: expected a floating point array.*<U"):
        as_sequence([["a"] * 5], 5, "item 7")
    with pytest.raises(InputError, match="item 7: expected a .* float array"):
        as_sequence([[1.0] * 5, [1.0] * 4], 5, "item 7")
    x = as_sequence(np.ones((2, 5), np.float64), 5, "item")
    assert x.dtype == np.float32 and x.flags.c_contiguous


def test_engine_cache_loads_once_and_follows_a_replaced_file(tmp_path):
    path = tmp_path / "m.fastlstm"
    fastlstm.save(random_spec(input_size=3, hidden_size=8, seed=1), path)
    engines.clear()
    loads = engines.load_count()
    first = engines.engine_for(path)
    assert engines.engine_for(str(path)) is first and engines.load_count() == loads + 1
    os.symlink(path, tmp_path / "link.fastlstm")  # the same file by another name: the same Engine
    assert engines.engine_for(tmp_path / "link.fastlstm") is first
    fastlstm.save(random_spec(input_size=3, hidden_size=9, seed=2), path)  # replaced (atomic rename)
    second = engines.engine_for(path)
    assert second is not first and second.hidden_size == 9 and engines.load_count() == loads + 2
    with pytest.raises(FormatError, match=r"cannot read model .*nope.fastlstm.*No such file"):
        engines.engine_for(tmp_path / "nope.fastlstm")
    with pytest.raises(FormatError, match="not a regular file"):
        engines.engine_for(tmp_path)
    (tmp_path / "junk.fastlstm").write_bytes(b"not a model")
    with pytest.raises(FormatError, match="junk.fastlstm"):
        engines.engine_for(tmp_path / "junk.fastlstm")


def test_read_input_refuses_bad_files_naming_them(tmp_path, monkeypatch):
    np.save(tmp_path / "ok.npy", np.zeros((4, 5), np.float16))
    np.save(tmp_path / "int.npy", np.zeros((4, 5), np.int32))
    np.save(tmp_path / "size.npy", np.zeros((4, 6), np.float32))
    np.save(tmp_path / "flat.npy", np.zeros(5, np.float32))
    np.save(tmp_path / "obj.npy", np.array([1.0, "a"], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "z.npz", good=np.zeros((2, 5)), bad=np.zeros((2, 3, 4)))
    np.savez(tmp_path / "empty.npz")
    (tmp_path / "trunc.npy").write_bytes((tmp_path / "size.npy").read_bytes()[:100])
    (tmp_path / "junk.npz").write_bytes(b"PK not a zip")
    os.mkfifo(tmp_path / "fifo.npy")
    assert files.read_input(str(tmp_path / "ok.npy"), 5)[""].shape == (4, 5)
    cases = {
        "int.npy": "expected floating point sequences.*int32",
        "size.npy": r"expected shape \(T, 5\) or \(N, T, 5\).*found \(4, 6\)",
        "flat.npy": r"found \(5,\)",
        "obj.npy": "not a readable .npy file.*allow_pickle",
        "z.npz": r"\[bad\]: expected shape .*found \(2, 3, 4\)",
        "empty.npz": "holds no arrays",
        "trunc.npy": "not a readable .npy file",
        "junk.npz": "not a readable .npz file",
        "fifo.npy": "not a regular file",
        "missing.npy": r"cannot read \(No such file",
    }
    for name, message in cases.items():
        with pytest.raises(InputError, match=f"{tmp_path}/{name}.*{message}"):
            files.read_input(str(tmp_path / name), 5)

    def denied(*args, **kwargs):  # the suite may run as root, where mode bits never refuse a read
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(np, "load", denied)
    with pytest.raises(InputError, match=r"ok.npy: cannot read \(Permission denied\)"):
        files.read_input(str(tmp_path / "ok.npy"), 5)


def test_find_inputs(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for rel in ("in/a.npy", "in/sub/b.npz", "in/notes.txt", "in/.hidden.npy", "c.npy"):
        (tmp_path / rel).write_bytes(b"x")
    out = tmp_path / "out"
    jobs = files.find_inputs([str(tmp_path / "in"), str(tmp_path / "c.npy")], str(out))
    assert [(j.source, j.target) for j in jobs] == [
        (str(tmp_path / "in/a.npy"), str(out / "a.npy")),
        (str(tmp_path / "in/sub/b.npz"), str(out / "sub/b.npz")),
        (str(tmp_path / "c.npy"), str(out / "c.npy")),
    ]
    with pytest.raises(InputError, match="nope.npy: No such file"):
        files.find_inputs([str(tmp_path / "nope.npy")], str(out))
    with pytest.raises(InputError, match="notes.txt: expected a .npy or .npz file"):
        files.find_inputs([str(tmp_path / "in/notes.txt")], str(out))
    with pytest.raises(InputError, match="would both write"):
        files.find_inputs([str(tmp_path / "in/a.npy"), str(tmp_path / "in")], str(out))
    with pytest.raises(InputError, match="overwrite the input"):
        files.find_inputs([str(tmp_path / "c.npy")], str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no .npy or .npz files"):
        files.find_inputs([str(tmp_path / "empty")], str(out))


def test_write_output_is_atomic_and_round_trips(tmp_path):
    target = str(tmp_path / "deep" / "y.npz")
    ys = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "file": np.ones((1, 2, 3), np.float32)}
    files.write_output(target, ys)
    with np.load(target) as z:
        assert set(z.files) == {"a", "file"} and all(np.array_equal(z[k], ys[k]) for k in ys)
    (tmp_path / "deep" / ".y.npz.part-abc.tmp").write_bytes(b"half")
    assert files.partial_files(target) == [str(tmp_path / "deep" / ".y.npz.part-abc.tmp")]
    assert sorted(os.listdir(tmp_path / "deep")) == [".y.npz.part-abc.tmp", "y.npz"]


NO_DASK = "import sys; sys.modules['dask'] = sys.modules['distributed'] = None; "


def test_core_imports_without_dask_and_says_how_to_install_it(tmp_path):
    model = tmp_path / "m.fastlstm"
    fastlstm.save(random_spec(input_size=3, hidden_size=8), model)
    code = NO_DASK + (
        "import fastlstm, fastlstm.cli, fastlstm.dask\n"
        "try:\n"
        f"    fastlstm.dask.run({str(model)!r}, None)\n"
        "except ImportError as exc:\n"
        "    assert isinstance(exc, fastlstm.FastLSTMError)\n"
        "    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "pip install 'fastlstm[dask]'" in result.stdout
    cli = NO_DASK + f"from fastlstm.cli import main; sys.exit(main(['score', {str(model)!r}, 'x.npy', '-o', 'out']))"
    result = subprocess.run([sys.executable, "-c", cli], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "pip install 'fastlstm[dask]'" in result.stderr


def test_importing_fastlstm_does_not_import_dask():
    code = ("import sys, fastlstm, fastlstm.cli, fastlstm.dask; "
            "print([m for m in ('dask', 'distributed') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr
