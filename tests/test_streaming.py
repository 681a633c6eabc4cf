"""Streaming at scale: batched stepping, stream management, threads, snapshots, chunks, long runs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import tracemalloc

import numpy as np
import pytest
from reference import reference_run
from specs import random_spec, rel_error

import fastlstm
from fastlstm import CellOptions, FormatError, InputError, State, StreamPool

TOL = 1e-6

SPECS = {
    "plain": dict(),
    "two_layers": dict(num_layers=2, hidden_size=20),
    "projection": dict(hidden_size=16, proj_size=5, num_layers=2),
    "general_cell": dict(peephole=True, options=CellOptions.make(clip=1.1)),
}


def _frames(T, B, I, seed=1):
    return np.random.default_rng(seed).normal(0, 1, (T, B, I)).astype(np.float32)


def _random_state(eng, B, seed=3):
    rng = np.random.default_rng(seed)
    st = eng.new_state(B)
    st.h[...] = rng.normal(0, 0.5, st.h.shape)
    st.c[...] = rng.normal(0, 0.5, st.c.shape)
    return st


def _step_all(eng, x, st):
    """x (T, B, I) stepped frame by frame into st -> y (T, B, Hout)."""
    return np.stack([eng.step(x[t], st) for t in range(x.shape[0])])


# ---- batched stepping == separate streams ------------------------------------------------------------
@pytest.mark.parametrize("name", SPECS)
def test_batched_step_equals_separate_streams(name):
    spec = random_spec(**SPECS[name], seed=11)
    eng = fastlstm.Engine(spec)
    T, B = 12, 5
    x = _frames(T, B, spec.input_size)
    batched = _random_state(eng, B)
    start = batched.copy()
    y = _step_all(eng, x, batched)
    for b in range(B):
        alone = start.select(b)
        y_b = np.stack([eng.step(x[t, b], alone) for t in range(T)])
        assert np.max(np.abs(y[:, b] - y_b)) <= TOL
        assert np.max(np.abs(batched.h[:, :, b] - alone.h[:, :, 0])) <= TOL
        assert np.max(np.abs(batched.c[:, :, b] - alone.c[:, :, 0])) <= TOL
    y_ref, h_ref, c_ref = reference_run(spec, x, start.h, start.c)
    assert rel_error(y, y_ref) < 2e-5 and rel_error(batched.c, c_ref) < 2e-5


# ---- stream management ---------------------------------------------------------------------------------
def test_state_stream_ops():
    eng = fastlstm.Engine(random_spec(hidden_size=6, proj_size=3, num_layers=2))
    st = _random_state(eng, 4)
    sel = st.select([2, 0])
    assert sel.batch == 2 and np.array_equal(sel.h[:, :, 0], st.h[:, :, 2])
    assert np.array_equal(st.select(-1).c[:, :, 0], st.c[:, :, 3])
    assert st.select(slice(1, 3)).batch == 2
    sel.h[...] = 7.0  # a copy, not a view
    assert not np.any(st.h == 7.0)
    dropped = st.drop([1, 2])
    assert dropped.batch == 2 and np.array_equal(dropped.c, st.select([0, 3]).c)
    grown = State.concat([st, eng.new_state(2)])
    assert grown.batch == 6 and grown.h.flags.c_contiguous and not np.any(grown.c[:, :, 4:])
    before = st.copy()
    st.put(1, eng.new_state(1))
    st.zero_([3])
    assert not np.any(st.h[:, :, [1, 3]]) and not np.any(st.c[:, :, [1, 3]])
    assert np.array_equal(st.h[:, :, [0, 2]], before.h[:, :, [0, 2]])
    st.put([1, 3], before.select([3, 1]))
    assert np.array_equal(st.c[:, :, 1], before.c[:, :, 3])
    with pytest.raises(InputError):
        st.select(4)
    with pytest.raises(InputError):
        st.put([0, 0], before.select([1, 2]))
    with pytest.raises(InputError):
        st.put([0, 1], before.select([0, 1, 2]))
    with pytest.raises(InputError):
        st.put(0, fastlstm.Engine(random_spec(hidden_size=7)).new_state(1))
    with pytest.raises(InputError):
        st.drop(slice(None))
    with pytest.raises(InputError):
        State.concat([])
    with pytest.raises(InputError):
        st.select(1.5)


def test_swapping_a_stream_leaves_the_others_untouched():
    spec = random_spec(num_layers=2, seed=4)
    eng = fastlstm.Engine(spec)
    x = _frames(20, 4, spec.input_size)
    undisturbed = eng.new_state(4)
    y_ref = _step_all(eng, x, undisturbed)
    st = eng.new_state(4)
    y1 = _step_all(eng, x[:10], st)
    st.put(2, eng.new_state(1))  # stream 2 ends; a new caller takes its slot
    y2 = _step_all(eng, x[10:], st)
    y = np.concatenate([y1, y2])
    others = [0, 1, 3]
    assert np.max(np.abs(y[:, others] - y_ref[:, others])) <= TOL
    fresh = eng.new_state(1)
    assert np.max(np.abs(y2[:, 2] - _step_all(eng, x[10:, 2:3], fresh)[:, 0])) <= TOL


def test_stream_pool_streams_come_and_go():
    spec = random_spec(hidden_size=10, seed=8)
    eng = fastlstm.Engine(spec)
    rng = np.random.default_rng(0)
    pool = StreamPool(eng)
    solo = {}  # stream id -> (its own batch-1 State, list of pool outputs, list of solo outputs)
    assert pool.step(np.zeros((0, spec.input_size), np.float32)).shape == (0, spec.output_size)
    for frame in range(60):
        if frame % 7 == 0 or len(pool) == 0:
            sid = pool.open()
            solo[sid] = (eng.new_state(1), [], [])
        if frame % 11 == 5 and len(pool) > 1:
            victim = pool.ids[int(rng.integers(len(pool)))]
            final = pool.close(victim)
            assert np.max(np.abs(final.h - solo[victim][0].h)) <= TOL
        x = rng.normal(0, 1, (len(pool), spec.input_size)).astype(np.float32)
        y = pool.step(x)
        for k, sid in enumerate(pool.ids):
            st, ys, ys_solo = solo[sid]
            ys.append(y[k])
            ys_solo.append(eng.step(x[k], st))
    for _st, ys, ys_solo in solo.values():
        assert np.max(np.abs(np.array(ys) - np.array(ys_solo))) <= TOL
    # snapshots move between pools, and a chunk advances every stream
    sid = pool.ids[0]
    snap = pool.state_of(sid)
    other = StreamPool(eng)
    moved = other.open("moved", State.from_bytes(snap.to_bytes()))
    xc = rng.normal(0, 1, (5, len(pool), spec.input_size)).astype(np.float32)
    y_pool = pool.step_chunk(xc)
    assert np.array_equal(other.step_chunk(xc[:, :1]), y_pool[:, :1])
    pool.restore(sid, snap)
    pool.reset(pool.ids[-1])
    assert not np.any(pool.state.h[:, :, -1])
    with pytest.raises(InputError):
        other.open(moved)
    with pytest.raises(InputError):
        pool.close("nobody")
    with pytest.raises(InputError):
        pool.open(state=eng.new_state(2))
    with pytest.raises(InputError):
        StreamPool(fastlstm.Engine(random_spec(num_directions=2)))


# ---- snapshots ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SPECS)
def test_snapshot_round_trip_replays_bit_identically(name, tmp_path):
    spec = random_spec(**SPECS[name], seed=5)
    eng = fastlstm.Engine(spec)
    x = _frames(30, 3, spec.input_size)
    st = _random_state(eng, 3)
    _step_all(eng, x[:10], st)
    blob, path = st.to_bytes(), tmp_path / "stream.state"
    st.save(path)
    y_live = _step_all(eng, x[10:], st)
    for restored in (State.from_bytes(blob), State.load(path), State.from_bytes(bytearray(blob))):
        assert restored.h.flags.writeable and restored.h.dtype == np.float32
        assert np.array_equal(_step_all(eng, x[10:], restored), y_live)
        assert np.array_equal(restored.h, st.h) and np.array_equal(restored.c, st.c)


def test_snapshot_moves_to_another_process(tmp_path):
    spec = random_spec(hidden_size=24, seed=9)
    fastlstm.save(spec, tmp_path / "m.fastlstm")
    eng = fastlstm.load(tmp_path / "m.fastlstm")
    x = _frames(8, 1, spec.input_size)[:, 0]
    st = eng.new_state()
    eng.step_chunk(x[:3], st)
    st.save(tmp_path / "s.state")
    np.save(tmp_path / "x.npy", x[3:])
    y_here = np.stack([eng.step(f, st) for f in x[3:]])
    child = (
        "import sys, numpy as np, fastlstm\n"
        "d = sys.argv[1]\n"
        "eng = fastlstm.load(d + '/m.fastlstm'); st = fastlstm.State.load(d + '/s.state')\n"
        "np.save(d + '/y.npy', np.stack([eng.step(f, st) for f in np.load(d + '/x.npy')]))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), *sys.path]))
    subprocess.run([sys.executable, "-c", child, str(tmp_path)], check=True, env=env, timeout=300)
    assert np.array_equal(np.load(tmp_path / "y.npy"), y_here)


def test_snapshot_refuses_bad_bytes(tmp_path):
    st = _random_state(fastlstm.Engine(random_spec(hidden_size=5, num_layers=2)), 2)
    good = st.to_bytes()
    bad = {
        "empty": b"",
        "short header": good[:20],
        "truncated": good[:-4],
        "extra": good + b"\0\0\0\0",
        "magic": b"X" + good[1:],
        "version": good[:8] + (99).to_bytes(4, "little") + good[12:],
        "payload bit flip": good[:-1] + bytes([good[-1] ^ 1]),
        "zero batch": good[:20] + (0).to_bytes(4, "little") + good[24:],
        "huge dims": good[:12] + (1 << 31).to_bytes(4, "little") * 5 + good[32:],
        "reserved": good[:36] + (1).to_bytes(4, "little") + good[40:],
    }
    for _what, blob in bad.items():
        with pytest.raises(FormatError):
            State.from_bytes(blob)
        (tmp_path / "bad.state").write_bytes(blob)
        with pytest.raises(FormatError):
            State.load(tmp_path / "bad.state")
    with pytest.raises(FormatError):
        State.from_bytes("not bytes")
    restored = State.from_bytes(good)
    assert np.array_equal(restored.h, st.h) and np.array_equal(restored.c, st.c)


def _load_in_thread(path, seconds=10.0):
    """State.load(path) in a daemon thread: -> the exception it raised (a blocked load fails the test)."""
    outcome = []

    def target():
        try:
            State.load(path)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001  (handed to the test)
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"State.load({path!r}) still running after {seconds} s"
    return outcome[0]


def test_snapshot_load_refuses_what_is_not_a_regular_file(tmp_path):
    """A directory, a FIFO (open() would block) and /dev/zero (read() would never end) are FormatErrors
    raised at once; a missing file stays an OSError."""
    paths = [tmp_path]
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.state")
        paths.append(tmp_path / "pipe.state")
    if os.path.exists("/dev/zero"):
        paths.append("/dev/zero")
    for path in paths:
        exc = _load_in_thread(path)
        assert isinstance(exc, FormatError) and "not a regular file" in str(exc), (path, exc)
    with pytest.raises(FileNotFoundError):
        State.load(tmp_path / "missing.state")


def test_snapshot_load_reads_no_more_than_the_header_announces(tmp_path):
    """The header is read and checked first: a file whose header announces more or less than the file
    holds is refused before its payload is read (nothing near the file's size is allocated)."""
    import struct

    good = State.zeros(2, 1, 3, 5, 4).to_bytes()
    fields = list(struct.unpack_from("<8s8I", good))
    big = 2**32 - 1
    fields[2:7] = [big, 2, big, big, big]  # every size at its maximum: ~2**100 bytes announced
    huge_header = struct.pack("<8s8I", *fields) + good[40:]
    cases = {
        "huge sizes": (huge_header, 0, rf"{len(good)} bytes, the header announces {40 + 4 * big * 2 * big * 2 * big}"),
        "trailing 64 MiB": (good, 64 << 20, rf"{len(good) + (64 << 20)} bytes, the header announces {len(good)}"),
        "truncated": (good[:-1], 0, rf"{len(good) - 1} bytes, the header announces {len(good)}"),
    }
    path = tmp_path / "s.state"
    for what, (blob, extra, match) in cases.items():
        with open(path, "wb") as f:
            f.write(blob)
            f.truncate(len(blob) + extra)  # sparse where the file system allows
        tracemalloc.start()
        try:
            with pytest.raises(FormatError, match=match):
                State.load(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 256 << 10, (what, peak)
        assert str(path) in str(pytest.raises(FormatError, State.load, path).value)


def _snapshot_mutations(good: bytes, rng) -> tuple[list[bytes], set[bytes]]:
    """Seeded mutations of a snapshot: truncations, byte flips in the header and the payload, header
    fields set to zero / huge / wrong values, appended garbage, garbage alone. -> (cases, the cases a
    loader may accept: the original and headers whose sizes multiply to the same length)."""
    import struct

    header = list(struct.unpack_from("<8s8I", good))

    def with_fields(**changes):
        fields = list(header)
        for name, value in changes.items():
            fields[("magic", "version", "layers", "directions", "batch", "hidden", "output", "crc",
                    "reserved").index(name)] = value
        return struct.pack("<8s8I", *fields) + good[40:]

    cases = [good]
    cases += [good[:n] for n in range(41)] + [good[:n] for n in rng.integers(41, len(good), 40)]
    for pos in [*range(40), *rng.integers(40, len(good), 60)]:  # one byte changed: header, then payload
        blob = bytearray(good)
        blob[pos] ^= int(rng.integers(1, 256))
        cases.append(bytes(blob))
    for _ in range(100):  # a few random bytes anywhere
        blob = np.frombuffer(good, np.uint8).copy()
        spots = rng.integers(0, len(good), int(rng.integers(2, 10)))
        blob[spots] = rng.integers(0, 256, spots.size, dtype=np.uint8)
        cases.append(blob.tobytes())
    sizes = ("layers", "directions", "batch", "hidden", "output")
    for name in sizes:
        for value in (0, 3, 2**31 - 1, 2**32 - 1):
            cases.append(with_fields(**{name: value}))
    for value in (2**31 - 1, 2**32 - 1, 2**16):  # all at once: products far beyond 2**64
        cases.append(with_fields(**{n: value for n in sizes if n != "directions"}))
        cases.append(with_fields(**{n: value for n in sizes}))
    swapped = [with_fields(layers=3, batch=2), with_fields(hidden=4, output=5)]  # same length, other shape
    cases += swapped
    cases += [with_fields(version=v) for v in (0, 2, 2**32 - 1)] + [with_fields(reserved=1), with_fields(crc=0)]
    cases += [with_fields(magic=m) for m in (b"FLSTMST\x01", b"\x00" * 8, b"PK\x03\x04\x00\x00\x00\x00")]
    cases += [good + rng.bytes(int(n)) for n in (1, 3, 4, 40, 1000, *rng.integers(1, 200, 10))]
    cases += [rng.bytes(int(n)) for n in (0, 1, 39, 40, 41, len(good), *rng.integers(0, 2 * len(good), 10))]
    return cases, {good, *swapped}


def test_snapshot_fuzz_from_bytes_and_load(tmp_path):
    """Every mutation is a FormatError, or (when the header, the length and the CRC still agree, e.g. two
    sizes swapped) a State that serialises back to exactly the same bytes; never another exception, and
    never an allocation much beyond the input's size, through from_bytes and load alike."""
    rng = np.random.default_rng(20260611)
    st = State(rng.standard_normal((2, 2, 3, 4)).astype(np.float32),
               rng.standard_normal((2, 2, 3, 5)).astype(np.float32))
    good = st.to_bytes()
    cases, acceptable = _snapshot_mutations(good, rng)
    path = tmp_path / "fuzz.state"
    st.save(tmp_path / "warm.state")  # first calls fill caches: keep them out of the measurement
    State.load(tmp_path / "warm.state")
    accepted = set()
    start = time.perf_counter()
    tracemalloc.start()
    try:
        for blob in cases:
            path.write_bytes(blob)
            for how, call in (("from_bytes", State.from_bytes), ("load", lambda b: State.load(path))):
                base = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
                try:
                    restored = call(blob)
                except FormatError as exc:
                    assert "\n" not in str(exc)
                    if len(blob) == len(good) and blob[:32] == good[:32] and blob[36:40] == good[36:40]:
                        assert "CRC-32 mismatch" in str(exc), exc  # only the payload or the stored CRC changed
                else:
                    accepted.add(blob)
                    assert restored.to_bytes() == blob, (how, blob[:40])
                    del restored
                grown = tracemalloc.get_traced_memory()[1] - base
                assert grown <= len(blob) + (32 << 10), (how, len(blob), grown)
    finally:
        tracemalloc.stop()
    assert accepted == acceptable, "a mutation other than a same-length size swap was accepted"
    assert time.perf_counter() - start < 2.0


# ---- chunked streaming -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", SPECS)
@pytest.mark.parametrize("B", [1, 3])
def test_chunks_equal_steps(name, B):
    spec = random_spec(**SPECS[name], seed=6)
    eng = fastlstm.Engine(spec)
    x = _frames(24, B, spec.input_size)
    by_steps = _random_state(eng, B)
    by_chunks = by_steps.copy()
    y_steps = _step_all(eng, x, by_steps)
    parts, t = [], 0
    for size in (1, 7, 0, 3, 13):
        chunk = x[t:t + size]
        parts.append(eng.step_chunk(chunk[:, 0] if B == 1 else chunk, by_chunks))
        t += size
    y_chunks = np.concatenate(parts)
    assert y_chunks.shape == ((24, spec.output_size) if B == 1 else (24, B, spec.output_size))
    y_steps = y_steps[:, 0] if B == 1 else y_steps
    # one summation order in every kernel: chunks and single steps agree bit for bit
    np.testing.assert_array_equal(y_chunks, y_steps)
    np.testing.assert_array_equal(by_chunks.h, by_steps.h)
    np.testing.assert_array_equal(by_chunks.c, by_steps.c)


def test_step_chunk_default_stream_and_errors():
    spec = random_spec(seed=2)
    eng = fastlstm.Engine(spec)
    x = _frames(6, 1, spec.input_size)[:, 0]
    y_chunk = eng.step_chunk(x)
    eng.reset()
    y_steps = np.stack([eng.step(f) for f in x])
    assert np.max(np.abs(y_chunk - y_steps)) <= TOL
    with pytest.raises(InputError):
        eng.step_chunk(x, eng.new_state(2))  # (T, I) is one stream
    with pytest.raises(InputError):
        eng.step_chunk(np.zeros((0, 3, spec.input_size)), eng.new_state(2))
    with pytest.raises(InputError):
        fastlstm.Engine(random_spec(num_directions=2)).step_chunk(x)


# ---- threads ------------------------------------------------------------------------------------------
def test_threads_sharing_one_engine_match_serial():
    """N threads, one Engine, each its own State, mixing step / step_chunk / run: bit-identical to serial."""
    spec = random_spec(input_size=16, hidden_size=96, num_layers=2, seed=12)
    eng = fastlstm.Engine(spec)
    n_threads, T, B = 6, 60, 2
    xs = [_frames(T, B, spec.input_size, seed=100 + k) for k in range(n_threads)]

    def work(k):
        st = _random_state(eng, B, seed=k)
        out = [_step_all(eng, xs[k][:20], st), eng.step_chunk(xs[k][20:40], st)]
        y_run, final = eng.run(xs[k][40:], st)
        return np.concatenate(out + [y_run]), final.h, final.c

    serial = [work(k) for k in range(n_threads)]
    for _ in range(3):
        results = [None] * n_threads
        barrier = threading.Barrier(n_threads)

        def thread_main(k, results=results, barrier=barrier):
            barrier.wait()
            results[k] = work(k)

        threads = [threading.Thread(target=thread_main, args=(k,)) for k in range(n_threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        for got, want in zip(results, serial, strict=True):
            assert got is not None
            for a, b in zip(got, want, strict=True):
                assert np.array_equal(a, b)


def test_kernels_release_the_gil():
    """While one thread is inside a long kernel call, another thread keeps running Python: the longest
    pause it sees is far shorter than the call (it would be the whole call if the GIL were held)."""
    spec = random_spec(input_size=16, hidden_size=256, seed=14)
    eng = fastlstm.Engine(spec)
    x = _frames(1500, 1, spec.input_size)[:, 0]
    eng.step_chunk(x[:5], eng.new_state())  # compiled and warm
    done, started = threading.Event(), []

    def kernel():
        started.append(time.perf_counter())
        eng.step_chunk(x, eng.new_state())
        done.set()

    th = threading.Thread(target=kernel)
    th.start()
    last, max_gap = time.perf_counter(), 0.0
    while not done.is_set():
        now = time.perf_counter()
        max_gap, last = max(max_gap, now - last), now
    th.join()
    duration = time.perf_counter() - started[0]
    assert max_gap < 0.5 * duration, f"main thread paused {max_gap:.3f} s during a {duration:.3f} s kernel call"


def test_default_stream_refuses_concurrent_use():
    spec = random_spec(seed=3)
    eng = fastlstm.Engine(spec)
    x = np.ones(spec.input_size, np.float32)
    held, release = threading.Event(), threading.Event()

    def hold_default_stream(_x, _state, _out):  # runs while the other thread owns the default stream
        held.set()
        release.wait(10)

    th = threading.Thread(target=eng._on_default_stream, args=(hold_default_stream, None, None))
    th.start()
    try:
        assert held.wait(10)
        for call in (lambda: eng.step(x), lambda: eng.step_chunk(x[None]), eng.reset):
            with pytest.raises(InputError, match="default stream"):
                call()
        eng.step(x, eng.new_state())  # explicit states are not affected
    finally:
        release.set()
        th.join()
    # sequential use from different threads is fine: it is one stream
    eng.reset()
    ys = []
    for _ in range(3):
        th = threading.Thread(target=lambda: ys.append(eng.step(x)))
        th.start()
        th.join()
    st = eng.new_state()
    assert np.array_equal(np.array(ys), np.array([eng.step(x, st) for _ in range(3)]))


# ---- long-running -------------------------------------------------------------------------------------
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _long_run(n_steps, traced_steps=10_000):
    """n_steps step() calls on one stream: RSS flat over all of them, the Python heap (tracemalloc, slow,
    so over the last traced_steps only) flat, the state finite."""
    spec = random_spec(input_size=4, hidden_size=8, seed=13)
    eng = fastlstm.Engine(spec)
    rng = np.random.default_rng(0)
    frames = rng.normal(0, 3, (1000, spec.input_size)).astype(np.float32)  # strong drive, saturating gates
    st = eng.new_state()
    for f in frames:
        eng.step(f, st)
    rss0 = _rss_bytes()
    for i in range(n_steps - traced_steps):
        eng.step(frames[i % 1000], st)
    tracemalloc.start()
    try:
        mem0, _ = tracemalloc.get_traced_memory()
        for i in range(traced_steps):
            y = eng.step(frames[i % 1000], st)
        mem1, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss1 = _rss_bytes()
    assert mem1 - mem0 < 16 * 1024, f"Python heap grew by {mem1 - mem0} bytes over {traced_steps} steps"
    assert rss1 - rss0 < 4 * 1024 * 1024, f"RSS grew by {rss1 - rss0} bytes over {n_steps} steps"
    assert np.all(np.isfinite(st.h)) and np.all(np.isfinite(st.c)) and np.all(np.isfinite(y))
    assert np.all(np.abs(st.h) <= 1.0)


def test_million_steps_memory_flat_and_state_finite():
    """~6 s on the 2-core dev box; FASTLSTM_QUICK_TESTS=1 runs 10^5 steps instead."""
    _long_run(100_000 if os.environ.get("FASTLSTM_QUICK_TESTS") else 1_000_000)
