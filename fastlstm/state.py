"""State: the mutable, per-stream part (h, c). The Engine holds everything else, immutable and shared."""

from __future__ import annotations

import os
import stat
import struct
import zlib
from typing import NamedTuple

import numpy as np

from .atomic import write_atomically
from .errors import FormatError, InputError
from .kernels.layout import SHAPE_WORDS, layer_scratch_at, state_sizes

# Snapshot bytes (little endian): a 40-byte header, then h (L*D*B*Hout) and c (L*D*B*H) as raw float32.
#   magic 8s | version u32 | layers u32 | directions u32 | batch u32 | hidden u32 | output u32 |
#   crc32 of the payload u32 | reserved u32 (0)
SNAPSHOT_MAGIC = b"FLSTMST\x00"
SNAPSHOT_VERSION = 1
_HEADER = struct.Struct("<8s8I")
_LE_F32 = np.dtype("<f4")


class _Header(NamedTuple):
    layers: int
    directions: int
    batch: int
    hidden: int
    output: int
    crc: int
    total: int  # the snapshot's size in bytes, header included, as the header announces it


def _parse_header(head, where: str) -> _Header:
    """Check the 40 header bytes of a snapshot (FormatError naming `where` if they are not one we wrote).
    Allocates nothing: the sizes are Python ints, so absurd products cannot overflow."""
    if len(head) < _HEADER.size:
        raise FormatError(f"{where}: only {len(head)} bytes (the header alone is {_HEADER.size})")
    magic, version, L, D, B, H, Hout, crc, reserved = _HEADER.unpack_from(head)
    if magic != SNAPSHOT_MAGIC:
        raise FormatError(f"{where}: bad magic (not a fastlstm state)")
    if version != SNAPSHOT_VERSION:
        raise FormatError(f"{where}: version {version} is not supported (this fastlstm reads "
                          f"version {SNAPSHOT_VERSION})")
    if min(L, B, H, Hout) < 1 or D not in (1, 2) or reserved != 0:
        raise FormatError(f"{where}: invalid header (layers={L}, directions={D}, batch={B}, "
                          f"hidden={H}, output={Hout}, reserved={reserved})")
    return _Header(L, D, B, H, Hout, crc, _HEADER.size + 4 * L * D * B * (Hout + H))


class State:
    """Recurrent state of B streams.

    h: (L, D, B, Hout) float32, writable     c: (L, D, B, H) float32, writable

    h and c are views of one float32 buffer that also holds the step kernel's scratch (layout.py), so a
    step passes one array to the kernel and allocates nothing. State(h, c) copies the given arrays into
    a new buffer; h and c cannot be rebound (write into them: st.h[...] = values).

    A State made by a whole model's engine (Engine.new_state) also holds the step scratch of the layers
    around the LSTM (`_extra` floats per stream) and the token ids of a step (`_ids`, (B,) int64, a view);
    the States derived from it (copy, select, drop, concat) keep that room. Any State of the same LSTM
    works with the engine: one without the room gets its scratch allocated per step.
    """

    __slots__ = ("_buf", "_h", "_c", "_batch", "_extra", "_ids")

    def __init__(self, h, c):
        h, c = _state_array(h, "h"), _state_array(c, "c")
        if h.shape[:3] != c.shape[:3]:
            raise InputError(f"State: h {h.shape} and c {c.shape} must agree on (layers, directions, batch)")
        self._allocate(*h.shape, c.shape[3])
        self._h[...] = h
        self._c[...] = c

    def _allocate(self, L: int, D: int, B: int, Hout: int, H: int, extra: int = 0) -> None:
        has_proj = Hout < H
        n_h, n_c, total = state_sizes(L, D, B, H, Hout, has_proj)
        total += B * extra  # a whole model's layer scratch (extra is even: the shape words stay aligned)
        self._buf = np.zeros(total, np.float32)
        self._buf[total - 2 * SHAPE_WORDS :].view(np.int64)[:] = (L, D, B, H, Hout)
        self._h = self._buf[:n_h].reshape(L, D, B, Hout)
        self._c = self._buf[n_h : n_h + n_c].reshape(L, D, B, H)
        self._batch = B
        self._extra = extra
        self._bind_ids()

    def _bind_ids(self) -> None:
        """_ids: the first words of a whole model's layer scratch, where step() puts token ids (kernels/model.py)."""
        self._ids = None
        if self._extra:
            L, D, B, Hout = self._h.shape
            H = self._c.shape[3]
            at = layer_scratch_at(L, D, B, H, Hout, Hout < H)
            self._ids = self._buf[at : at + 2 * B].view(np.int64)

    @classmethod
    def _of(cls, h, c, extra: int) -> State:
        """State(h, c) with `extra` layer scratch floats per stream (the room of the State it comes from)."""
        state = cls.__new__(cls)
        state._allocate(*h.shape, c.shape[3], extra)
        state._h[...] = h
        state._c[...] = c
        return state

    @property
    def h(self) -> np.ndarray:
        return self._h

    @property
    def c(self) -> np.ndarray:
        return self._c

    @classmethod
    def zeros(cls, layers: int, directions: int, batch: int, hidden: int, output: int, extra: int = 0) -> State:
        """Zeros; extra: a whole model's layer scratch floats per stream (Engine.new_state knows it)."""
        state = cls.__new__(cls)
        state._allocate(layers, directions, batch, output, hidden, extra)
        return state

    @property
    def batch(self) -> int:
        return self.h.shape[2]

    def copy(self) -> State:
        """An independent deep copy (snapshot) of this state."""
        state = State.__new__(State)
        state._buf = self._buf.copy()
        n_h, n_c = self._h.size, self._c.size
        state._h = state._buf[:n_h].reshape(self._h.shape)
        state._c = state._buf[n_h : n_h + n_c].reshape(self._c.shape)
        state._batch = self._batch
        state._extra = self._extra
        state._bind_ids()
        return state

    def zero_(self, streams=None) -> None:
        """Zero every stream, or only `streams` (an index, slice or sequence of indices), in place."""
        if streams is None:
            self.h.fill(0.0)
            self.c.fill(0.0)
            return
        rows = self._rows(streams)
        self.h[:, :, rows] = 0.0
        self.c[:, :, rows] = 0.0

    # ---- stream management: take streams out, put streams in, grow and shrink the batch ---------------
    # Streams are rows of axis 2 (B). Methods returning a State return a new, C-contiguous copy; `put` and
    # `zero_` write in place and leave the other streams untouched.
    def select(self, streams) -> State:
        """A new State holding copies of `streams` (index, slice or sequence; repeats allowed), in order."""
        rows = self._rows(streams, allow_repeats=True)
        return State._of(self.h[:, :, rows], self.c[:, :, rows], self._extra)

    def drop(self, streams) -> State:
        """A new State without `streams` (the others keep their order). Dropping every stream is an error."""
        keep = np.setdiff1d(np.arange(self.batch), self._rows(streams, allow_repeats=True))
        if keep.size == 0:
            raise InputError("drop: a State needs at least one stream; keep a State of batch 1 or discard it")
        return self.select(keep)

    def put(self, streams, other: State) -> None:
        """Overwrite `streams` in place with the streams of `other` (same model; batch len(streams), or 1
        to write the same stream into every slot)."""
        rows = self._rows(streams)
        self._check_same_cell(other, "put")
        if other.batch not in (rows.size, 1):
            raise InputError(f"put: {rows.size} target streams but the given State has batch {other.batch}")
        self.h[:, :, rows] = other.h
        self.c[:, :, rows] = other.c

    @classmethod
    def concat(cls, states) -> State:
        """One State with the streams of `states` one after another (e.g. grow a batch by a new stream)."""
        states = list(states)
        if not states:
            raise InputError("concat: needs at least one State")
        for st in states:
            if not isinstance(st, State):
                raise InputError(f"concat: expected fastlstm States, got {type(st).__name__}")
            states[0]._check_same_cell(st, "concat")
        return cls._of(np.concatenate([st.h for st in states], axis=2), np.concatenate([st.c for st in states], axis=2),
                       states[0]._extra)

    def _rows(self, streams, allow_repeats: bool = False) -> np.ndarray:
        """index / slice / sequence of indices -> int64 rows in [0, B); negatives count from the end."""
        B = self.batch
        if isinstance(streams, slice):
            return np.arange(B)[streams]
        rows = np.asarray(streams)
        if rows.ndim > 1 or (rows.size and not np.issubdtype(rows.dtype, np.integer)) or rows.dtype == bool:
            raise InputError(f"streams: expected an index, a slice or a sequence of indices, got {streams!r}")
        rows = rows.reshape(-1).astype(np.int64)
        if rows.size and (rows.min() < -B or rows.max() >= B):
            raise InputError(f"streams: index out of range for a State of batch {B}: {rows.tolist()}")
        rows = np.where(rows < 0, rows + B, rows)
        if not allow_repeats and np.unique(rows).size != rows.size:
            raise InputError(f"streams: repeated index in {rows.tolist()}")
        return rows

    def _check_same_cell(self, other, what: str) -> None:
        if not isinstance(other, State):
            raise InputError(f"{what}: expected a fastlstm State, got {type(other).__name__}")
        mine = self.h.shape[:2] + self.h.shape[3:] + self.c.shape[3:]
        theirs = other.h.shape[:2] + other.h.shape[3:] + other.c.shape[3:]
        if mine != theirs:
            raise InputError(f"{what}: States of different models (layers, directions, output, hidden) "
                             f"{mine} vs {theirs}")

    # ---- snapshots: bytes and files, no pickle -------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The state as bytes: a versioned 40-byte header (sizes, CRC-32) and raw little-endian float32."""
        L, D, B, Hout = self.h.shape
        payload = self.h.astype(_LE_F32).tobytes() + self.c.astype(_LE_F32).tobytes()
        header = _HEADER.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, L, D, B, self.c.shape[3], Hout,
                              zlib.crc32(payload), 0)
        return header + payload

    @classmethod
    def from_bytes(cls, data) -> State:
        """Rebuild a State from to_bytes() output. Raises FormatError for anything else (wrong magic or
        version, sizes that do not match the length, a CRC mismatch). The arrays are fresh and writable."""
        try:
            view = memoryview(data).cast("B")
        except TypeError as exc:
            raise FormatError(f"state snapshot: expected bytes, got {type(data).__name__}") from exc
        header = _parse_header(view[:_HEADER.size], "state snapshot")
        if len(view) != header.total:
            raise FormatError(f"state snapshot: {len(view)} bytes, the header announces {header.total}")
        return cls._from_payload(view[_HEADER.size:], header, "state snapshot")

    def save(self, path: str | os.PathLike) -> None:
        """Write to_bytes() to `path` atomically (a temporary file renamed into place)."""
        write_atomically(path, [self.to_bytes()], prefix=".state-")

    @classmethod
    def load(cls, path: str | os.PathLike) -> State:
        """Read a file written by save().

        Reads the 40-byte header, checks it, then reads exactly the payload it announces and one byte more
        to make sure the file ends there; nothing larger than the file is ever allocated. Raises FormatError
        for bad content (as from_bytes) and for a path that is not a regular file (a FIFO would block,
        /dev/zero never ends, a directory has no bytes); OSError (FileNotFoundError, PermissionError, ...)
        if the file cannot be opened."""
        path = os.fspath(path)
        where = f"state snapshot {os.fsdecode(path)!r}"
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise FormatError(f"{where}: not a regular file")
        # O_NONBLOCK: should the path become a FIFO after the stat above, open() returns at once and the
        # fstat below refuses it (regular files ignore the flag).
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0))
        with open(fd, "rb") as f:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise FormatError(f"{where}: not a regular file")
            header = _parse_header(f.read(_HEADER.size), where)
            if info.st_size != header.total:  # before reading the payload: the header may announce any size
                raise FormatError(f"{where}: {info.st_size} bytes, the header announces {header.total}")
            payload = f.read(header.total - _HEADER.size)
            if len(payload) != header.total - _HEADER.size or f.read(1):  # the file changed under us
                raise FormatError(f"{where}: the file no longer holds the {header.total} bytes the header "
                                  f"announces (changed while being read)")
        return cls._from_payload(payload, header, where)

    @classmethod
    def _from_payload(cls, payload, header: _Header, where: str) -> State:
        """The State of a payload of exactly the size `header` announces (checked by the caller)."""
        if zlib.crc32(payload) != header.crc:
            raise FormatError(f"{where}: CRC-32 mismatch (corrupted or tampered bytes)")
        L, D, B, H, Hout = header.layers, header.directions, header.batch, header.hidden, header.output
        n_h = L * D * B * Hout
        # astype: a native-order, owned, writable copy; one per array, so a load allocates the payload once
        state = cls.zeros(L, D, B, H, Hout)
        state.h.reshape(-1)[:] = np.frombuffer(payload, dtype=_LE_F32, count=n_h)
        state.c.reshape(-1)[:] = np.frombuffer(payload, dtype=_LE_F32, offset=4 * n_h)
        return state

    def __repr__(self) -> str:
        L, D, B, Hout = self.h.shape
        return f"State(layers={L}, directions={D}, batch={B}, hidden={self.c.shape[-1]}, output={Hout})"


def check_state(state, h_shape: tuple[int, ...], c_shape: tuple[int, ...], what: str = "state") -> None:
    """Refuse a state that does not belong to this model (wrong type or shape). Its h and c are always
    writable C-contiguous float32 views of its own buffer (State makes them and they cannot be rebound)."""
    if not isinstance(state, State):
        raise InputError(f"{what} must be a fastlstm State (from Engine.new_state), got {type(state).__name__}")
    for name, array, shape in (("h", state.h, h_shape), ("c", state.c, c_shape)):
        if not isinstance(array, np.ndarray) or array.shape != shape or array.dtype != np.float32:
            found = (array.shape, array.dtype) if isinstance(array, np.ndarray) else type(array).__name__
            raise InputError(f"{what}.{name}: expected float32 array of shape {shape}, found {found}")


def _state_array(array, name: str) -> np.ndarray:
    """A (L, D, B, n) float32 array for State(h, c), or InputError."""
    if not isinstance(array, np.ndarray):
        raise InputError(f"State: {name} must be a float32 numpy array, got {type(array).__name__}")
    if array.dtype != np.float32:
        raise InputError(f"State: {name} must be float32, got {array.dtype}")
    if array.ndim != 4 or min(array.shape) < 1 or array.shape[1] not in (1, 2):
        raise InputError(f"State: {name} must have shape (layers, directions, batch, size), got {array.shape}")
    return array
