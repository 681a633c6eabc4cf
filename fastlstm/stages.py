"""ModelEngine: the Engine of a whole model, with layers before and/or after the LSTM stack (fastlstm.layers).

    input stage   token ids (an Embedding first) or features -> the LSTM's input rows
    output stage  the LSTM's per-step rows, or its last valid step (a SelectLast first) -> the head's rows

The layers are packed into the plan's wbuf with the LSTM (plan_layers.py) and run by the one entry kernel
(kernels/entry.py, kernels/model.py): step() is one kernel call (input stage, the LSTM's step, the head) and
writes the head's output, so it allocates nothing with out= and a State of this engine (whose buffer holds
the layers' scratch and the token ids); run() is kernel calls around the LSTM's run (OP_INPUT, the stack,
OP_HEAD) with the same row kernels, so step() over a sequence equals run() on it bit for bit. A SelectLast
is applied here, in NumPy (it picks rows; run() only).
"""

from __future__ import annotations

import numpy as np

from .engine import _F32, Engine, _as_float32
from .errors import InputError
from .kernels.entry import OP_HEAD, OP_INPUT, OP_STEP
from .kernels.model import BAD_TOKEN, DONE
from .layers import Linear
from .plan_layers import table_layers
from .state import State, check_state

_I64 = np.dtype(np.int64)
_NO_X = np.zeros(1, np.float32)  # x of a token model's step (its ids travel in the lens argument)
_NO_IDS = np.zeros(1, np.int64)  # lens of a feature model's step (unused)


class ModelEngine(Engine):
    """An Engine whose spec has layers around the LSTM. run() takes what the source model takes (int token
    ids (T,) / (T, B) / (B, T) with batch_first, or features) and returns what it returns: per-step rows
    (T, [B,] C), or (B, C) / (C,) when the model selects the last (valid) step. step() takes a token id, (B,)
    ids, or a frame (F,) / (B, F) and returns that step's head output (C,) / (B, C)."""

    def __init__(self, spec, **kwargs):
        super().__init__(spec, **kwargs)
        self._select = spec.post[0] if spec.selects_last else None  # a SelectLast (run() only), or None
        self._tokens = spec.vocab_size is not None
        head = table_layers(spec)[len(spec.pre):]  # the layers after the LSTM the kernels run
        self._has_pre, self._has_head = bool(spec.pre), bool(head)
        # A step's phases are the LSTM's layers and, when big, the head's first Linear (kernels/model.py): a
        # team pays when the largest of them reaches the crossover.
        if head and isinstance(head[0], Linear):
            self._step_work = max(self._step_work, head[0].in_features * head[0].out_features)
        self._out_shapes = {1: (self.out_features,), 2: (1, self.out_features)}

    # ---- run -------------------------------------------------------------------------------------
    def run(self, x, state: State | None = None, sequence_lens=None, batch_first: bool = False):
        """Run whole sequences through the whole model (see the class docstring); returns (output, final
        State). The state passed in is not modified."""
        return self._run_model(x, state, sequence_lens, batch_first, every_step=False)

    def _run_model(self, x, state, sequence_lens, batch_first, every_step):
        x3, squeeze = self._sequence_input(x, batch_first)
        T, B, _ = x3.shape
        lens = self._check_lens(sequence_lens, T, B)
        final = self._final_state(state, B)
        y = self._run_stack(x3, lens, final)
        return self._sequence_output(y, final.h, lens, squeeze, batch_first, every_step), final

    def _sequence_input(self, x, batch_first: bool):
        """x as the source model takes it -> (the LSTM's input (T, B, I) float32 time-major, squeeze: the
        input had no batch axis)."""
        if self._tokens:
            ids = token_ids(x, self.vocab_size, check_range=False)
            if ids.ndim not in (1, 2):
                raise InputError(f"token ids: expected (T,) or (T, B) ((B, T) with batch_first=True), "
                                 f"found shape {ids.shape}")
            squeeze = ids.ndim == 1
            ids2 = ids[:, None] if squeeze else (ids.T if batch_first else ids)
            _check_nonempty(ids2.shape, np.shape(x))
            T, B = ids2.shape
            flat = np.array(ids2, dtype=np.int64, order="C").reshape(-1)  # a writable copy: one kernel type
            rows = np.empty((T * B, self.input_size), np.float32)
            status = self._call(OP_INPUT, *self._args, _NO_X, rows.reshape(-1), _NO_X, flat, self._ctl, T * B, 1,
                                0, 1)
            if status == BAD_TOKEN:
                token_ids(x, self.vocab_size)  # raises the InputError naming it where the caller put it
            _check_done(status, "input stage")
            return rows.reshape(T, B, -1), squeeze
        x3, squeeze = feature_sequence(x, self.in_features, batch_first)
        if not self._has_pre:
            return x3, squeeze
        T, B, _ = x3.shape
        rows = np.empty((T * B, self.input_size), np.float32)
        _check_done(self._call(OP_INPUT, *self._args, x3.reshape(-1), rows.reshape(-1), _NO_X, _NO_IDS, self._ctl,
                               T * B, 1, 0, 1), "input stage")
        return rows.reshape(T, B, -1), squeeze

    def _sequence_output(self, y, final_h, lens, squeeze: bool, batch_first: bool, every_step: bool):
        """The head on the LSTM's output y (T, B, D*Hout), final_h (L, D, B, Hout), lens (B,): (T, B, C) per
        step ((B, T, C) with batch_first, (T, C) when squeezed), or (B, C) / (C,) when the model selects the
        last step (every_step: per step anyway, as step_chunk returns)."""
        T, B, F = y.shape
        if self._select is not None and not every_step:
            if self._select.state:  # h_n of each direction of the last layer, directions concatenated
                rows = np.ascontiguousarray(final_h[-1].transpose(1, 0, 2).reshape(B, F))
            else:  # each row's output at its last valid step; a length-0 row's is zero, as its LSTM state is
                rows = np.ascontiguousarray(y[np.maximum(lens - 1, 0), np.arange(B)])
                rows[lens == 0] = 0.0
            out = self._head(rows)
            return out[0] if squeeze else out
        out = self._head(y.reshape(T * B, F)).reshape(T, B, -1)
        if squeeze:
            return out[:, 0]
        return np.ascontiguousarray(out.transpose(1, 0, 2)) if batch_first else out

    def _head(self, rows: np.ndarray) -> np.ndarray:
        """(N, D*Hout) rows -> (N, C): the head's layers (kernels/model.run_head)."""
        if not self._has_head:
            return rows
        out = np.empty((rows.shape[0], self.out_features), np.float32)
        _check_done(self._call(OP_HEAD, *self._args, rows.reshape(-1), out.reshape(-1), _NO_X, _NO_IDS, self._ctl,
                               rows.shape[0], 1, 0, 1), "head")
        return out

    # ---- step ------------------------------------------------------------------------------------
    def step(self, x_t, state: State | None = None, out=None):
        """Advance B streams by one token or frame through the whole model, in one kernel call: a token id
        (int) or (B,) ids, or a frame (F,) / (B, F) -> the head's output (C,) / (B, C). `state` is advanced in
        place (None: the engine's default stream); out: a float32 C-contiguous array of B*C elements to write
        the result into (returned)."""
        if state is None:
            return self._on_default_stream(self.step, x_t, out)
        # The common cases cost a few attribute checks here, as Engine.step's: the kernel checks every size
        # and every token id and refuses (0) instead; anything else, or a refusal, takes the checked path.
        if type(state) is State:
            B = state._batch
            x, ids, single = _NO_X, _NO_IDS, True
            if self._tokens:
                if (type(x_t) is int or type(x_t) is np.int64) and B == 1 and state._ids is not None:
                    ids = state._ids
                    try:
                        ids[0] = x_t
                    except OverflowError:  # beyond int64: the checked path says so
                        return self._step_checked(x_t, state, out)
                elif (type(x_t) is np.ndarray and x_t.dtype is _I64 and x_t.ndim == 1 and x_t.flags.c_contiguous
                      and x_t.flags.writeable):
                    ids, single = x_t, False
                else:
                    return self._step_checked(x_t, state, out)
            elif type(x_t) is np.ndarray and x_t.dtype is _F32 and x_t.flags.c_contiguous and (
                    x_t.ndim == 2 or x_t.ndim == 1 and B == 1):
                x, single = (x_t, True) if x_t.ndim == 1 else (x_t.reshape(-1), False)
            else:
                return self._step_checked(x_t, state, out)
            y = self._fast_step(x, ids, state, B, self._out_shapes[1] if single else (B, self.out_features), out)
            if y is not None:
                return y
        return self._step_checked(x_t, state, out)

    def _step_checked(self, x_t, state: State, out):
        """step() for any input: each problem named (an InputError), then the same kernel call."""
        if not self.streamable:
            raise InputError("step() needs a model without reverse directions (a reverse pass needs the "
                             "future); use run() on the whole sequence")
        if self._tokens:
            ids = token_ids(x_t, self.vocab_size)
            if ids.ndim > 1:
                raise InputError(f"x_t: expected a token id or (B,) token ids, found shape {ids.shape}")
            if ids.size == 0:
                raise InputError("x_t: expected at least one token id, found an empty array")
            single, x = ids.ndim == 0, _NO_X
            ids = np.array(ids.reshape(-1), dtype=np.int64)  # a writable copy: the kernel's argument type
            B = ids.size
        else:
            frames, single = feature_frame(x_t, self.in_features)
            B, ids = frames.shape[0], _NO_IDS
            x = frames.reshape(-1)
        check_state(state, *self._state_shapes(B), what="state (batch must match x_t)")
        C = self.out_features
        shape = (C,) if single else (B, C)
        if out is None:
            y = np.empty(shape, np.float32)
        elif (isinstance(out, np.ndarray) and out.dtype == np.float32 and out.flags.c_contiguous
              and out.flags.writeable and out.size == B * C):
            y = out
        else:
            found = (out.shape, out.dtype) if isinstance(out, np.ndarray) else type(out).__name__
            raise InputError(f"out: expected a writable C-contiguous float32 array of {B * C} elements "
                             f"(shape {shape}), found {found}")
        team = self._team_for(B * self._step_work, "step")
        _check_done(self._call(OP_STEP, *self._args, x, y.reshape(-1), state._buf, ids, self._ctl, 1, B, 0, team),
                    "step")
        return y

    def step_chunk(self, x, state: State | None = None):
        """T tokens or frames per stream in one call: the head's output at every step (T, [B,] C), bit for bit
        the result of T step() calls. `state` is advanced in place (None: the default stream)."""
        if state is None:
            return self._on_default_stream(lambda x_, st, _out: self.step_chunk(x_, st), x, None)
        if not self.streamable:
            raise InputError("step_chunk() needs a model without reverse directions; use run()")
        y, final = self._run_model(x, state, None, False, every_step=True)
        state.h[...] = final.h
        state.c[...] = final.c
        return y

    def __repr__(self) -> str:
        layers = " -> ".join([x.describe() for x in self.spec.pre] + [super().__repr__()]
                             + [x.describe() for x in self.spec.post])
        return f"ModelEngine({layers})"


def _check_done(status: int, what: str) -> None:
    if status != DONE:  # every size was checked before the call: the kernel cannot refuse them
        raise RuntimeError(f"fastlstm internal error: the {what} kernel refused validated shapes ({status}); "
                           f"please report it")


# ------------------------------------------------------------------------------------------- validation


def token_ids(x, vocab: int, check_range: bool = True) -> np.ndarray:
    """x as an int64 array of token ids in [0, vocab); InputError naming the first bad one. Integer arrays
    (and Python ints) are taken as they are; float arrays only when every value is a whole number (e.g.
    the float ids a Keras model takes). check_range=False leaves the range of integer arrays to the
    kernel (the input stage finds a bad id in nanoseconds); the caller then calls again for the message."""
    if type(x) is int and not 0 <= x < vocab:  # (a Python int of any size: beyond int64 numpy makes an object)
        raise InputError(f"token ids: {x} at position () is outside the vocabulary [0, {vocab})")
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as exc:  # ragged nested lists and the like
        raise InputError(f"token ids: expected integers, found {type(x).__name__} ({exc})") from None
    kind = a.dtype.kind
    if kind not in "iuf":
        raise InputError(f"token ids: expected integers, found {a.dtype} values")
    if kind == "f":
        whole = np.isfinite(a) & (a == np.floor(a))
        if not whole.all():
            pos = _position(~whole)
            raise InputError(f"token ids: {a[pos].item()!r} at position {pos} is not an integer")
    elif not check_range and (kind == "i" or a.dtype.itemsize < 8):  # uint64 could wrap in int64
        return a.astype(np.int64, copy=False)
    bad = (a < 0) | (a >= vocab)
    if bad.any():
        pos = _position(bad)
        value = a[pos].item()
        raise InputError(f"token ids: {int(value)} at position {pos} is outside the vocabulary [0, {vocab})")
    return a.astype(np.int64, copy=False)


def _position(mask: np.ndarray) -> tuple:
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))


def _check_nonempty(shape, given) -> None:
    if shape[0] < 1 or shape[1] < 1:
        raise InputError(f"x: sequence length and batch must be >= 1, found shape {given}")


def feature_sequence(x, size: int, batch_first: bool):
    """Float input (T, F), (T, B, F) or (B, T, F) -> ((T, B, F) float32 C-contiguous, squeeze)."""
    x = _float_array(x, "x", f"(T, {size}) or (T, B, {size})")
    if x.ndim == 2:
        x3, squeeze = x[:, None, :], True
    elif x.ndim == 3:
        x3, squeeze = (x.transpose(1, 0, 2) if batch_first else x), False
    else:
        raise InputError(f"x: expected (T, {size}) or (T, B, {size}), found shape {x.shape}")
    if x3.shape[2] != size:
        raise InputError(f"x: expected {size} features in the last axis, found shape {x.shape}")
    _check_nonempty(x3.shape, x.shape)
    return _kernel_array(x3), squeeze


def feature_frame(x_t, size: int):
    """Float frame (F,) or (B, F) -> ((B, F) float32 C-contiguous, squeeze)."""
    x = _float_array(x_t, "x_t", f"({size},) or (B, {size})")
    squeeze = x.ndim == 1
    if squeeze:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != size or x.shape[0] < 1:
        raise InputError(f"x_t: expected shape ({size},) or (B, {size}), found {np.shape(x_t)}")
    return _kernel_array(x), squeeze


def _kernel_array(x: np.ndarray) -> np.ndarray:
    """x as a writable C-contiguous float32 array (a read-only array is another argument type to numba: it
    would compile the kernel again)."""
    x = np.ascontiguousarray(_as_float32(x, "x"))
    return x if x.flags.writeable else x.copy()


def _float_array(x, what: str, expected: str) -> np.ndarray:
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{what}: expected an array of shape {expected}, found {type(x).__name__} ({exc})") from None
    if not np.issubdtype(a.dtype, np.floating):
        raise InputError(f"{what}: expected a floating point array (float32 preferred), found {a.dtype}; "
                         f"this model takes features, not token ids")
    return a
