"""StreamPool: many independent streams of one Engine, advanced together by one batched call per frame.

Streams come and go (a call starts, a microphone unplugs, a chat session ends). The pool keeps their
states as the rows of one batched State, in opening order, so a frame for every open stream costs one
Engine.step on (n, I) instead of n calls. Opening or closing a stream copies the other rows once (O(n)
per event, nothing per frame); rows keep their relative order.

    pool = StreamPool(engine)
    a = pool.open()                      # fresh zero stream; ids are yours or auto-numbered
    b = pool.open("call-17", saved)      # or resume a saved batch-1 State
    y = pool.step(x)                     # x (n, I): row k belongs to pool.ids[k] -> y (n, Hout)
    snap = pool.state_of(a)              # batch-1 copy: State.to_bytes()/save() it, move it elsewhere
    final = pool.close(a)                # the stream's last state (batch 1); the others are untouched

A pool is a plain object for one thread (or guard it with your own lock); several pools may share one
Engine from several threads.
"""

from __future__ import annotations

import itertools

import numpy as np

from .errors import InputError
from .state import State


class StreamPool:
    """Independent streams of `engine` stepped as one batch. See the module docstring."""

    def __init__(self, engine):
        if not engine.streamable:
            raise InputError("StreamPool needs a model without reverse directions (step() cannot run them)")
        self.engine = engine
        self._ids: list = []
        self._row: dict = {}
        self._state: State | None = None  # batch == len(self), None when empty
        self._auto = itertools.count()

    # ---- membership --------------------------------------------------------------------------------
    @property
    def ids(self) -> tuple:
        """Open stream ids in row order: row k of step()'s x and y belongs to ids[k]."""
        return tuple(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, stream_id) -> bool:
        return stream_id in self._row

    def row(self, stream_id) -> int:
        """The row of `stream_id` in step()'s x and y."""
        try:
            return self._row[stream_id]
        except KeyError:
            raise InputError(f"no open stream {stream_id!r} in this pool") from None

    @property
    def state(self) -> State | None:
        """The live batched State (rows in ids order; None when the pool is empty). step() advances it."""
        return self._state

    def open(self, stream_id=None, state: State | None = None):
        """Add a stream (zeros, or a copy of the batch-1 `state`) as the last row; returns its id."""
        if stream_id is None:
            stream_id = next(self._auto)
            while stream_id in self._row:
                stream_id = next(self._auto)
        elif stream_id in self._row:
            raise InputError(f"stream {stream_id!r} is already open in this pool")
        fresh = self.engine.new_state(1)
        if state is not None:
            fresh.put(0, state)  # refuses a State of another model or of batch > 1
        self._state = fresh if self._state is None else State.concat([self._state, fresh])
        self._row[stream_id] = len(self._ids)
        self._ids.append(stream_id)
        return stream_id

    def close(self, stream_id) -> State:
        """Remove a stream; returns its final state (batch 1). The other rows keep their order."""
        k = self.row(stream_id)
        final = self._state.select(k)
        self._state = self._state.drop(k) if len(self._ids) > 1 else None
        del self._ids[k]
        self._row = {sid: i for i, sid in enumerate(self._ids)}
        return final

    # ---- per-stream state ----------------------------------------------------------------------------
    def state_of(self, stream_id) -> State:
        """A batch-1 snapshot (copy) of one stream."""
        return self._state.select(self.row(stream_id))

    def restore(self, stream_id, state: State) -> None:
        """Overwrite one stream with the batch-1 `state` (e.g. a snapshot); the others are untouched."""
        self._state.put(self.row(stream_id), state)

    def reset(self, stream_id) -> None:
        """Zero one stream."""
        self._state.zero_(self.row(stream_id))

    # ---- stepping --------------------------------------------------------------------------------
    def step(self, x) -> np.ndarray:
        """One frame for every open stream: x (n, I) in ids order -> y (n, Hout)."""
        if self._state is None:
            return self._empty(x, (0,))
        return self.engine.step(x, self._state)

    def step_chunk(self, x) -> np.ndarray:
        """T frames for every open stream: x (T, n, I) -> y (T, n, Hout)."""
        if self._state is None:
            return self._empty(x, (np.shape(x)[0], 0) if np.ndim(x) == 3 else None)
        if np.ndim(x) != 3:
            raise InputError(f"x: expected (T, {len(self)}, {self.engine.input_size}), found {np.shape(x)}")
        return self.engine.step_chunk(x, self._state)

    def _empty(self, x, lead) -> np.ndarray:
        shape, I = np.shape(x), self.engine.input_size
        if lead is None or shape[:-1] != lead or shape[-1] != I:
            expected = (*lead, I) if lead is not None else f"(T, 0, {I})"
            raise InputError(f"x: the pool has no open stream, expected shape {expected}, found {shape}")
        return np.zeros((*lead, self.engine.output_size), dtype=np.float32)

    def __repr__(self) -> str:
        return f"StreamPool({len(self)} streams of {self.engine!r})"
