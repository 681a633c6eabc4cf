"""The input and output stages of a whole model: the layers before and after the LSTM stack as the Engine
runs them (kernels in kernels/layers.py, layer specs in layers.py).

    input stage   token ids (Embedding first) or features -> the LSTM's input rows (T*B, I) / (B, I)
    output stage  the LSTM's per-step rows (T*B, D*Hout) or its last valid step (B, D*Hout) -> the head's
                  rows (., C)

Both stages are packed once per Engine into one float32 buffer and two int64 tables (pack_layers) and
are immutable afterwards, like the LSTM's weights; the per-call work arrays live in the caller's State
(scratch) or are allocated per run() call.
"""

from __future__ import annotations

import numba
import numpy as np

from .errors import InputError
from .kernels.config import JIT
from .kernels.layers import (
    ACTIVATION_CODES,
    K_ACTIVATION,
    K_EMBEDDING,
    K_LAYER_NORM,
    K_LINEAR,
    LB,
    ROW_CHUNK,
    T_ACT,
    T_B,
    T_EPS,
    T_IN,
    T_KIND,
    T_NBLK,
    T_OUT,
    T_W,
    TABLE_COLUMNS,
    rows_forward,
    scratch_stride,
    select_last,
    tokens_forward,
)
from .kernels.model_step import BAD_TOKEN, STEP_DONE, frame_step, model_step_floats, token_step
from .layers import Activation, Embedding, LayerNorm, Linear
from .state import State

_ALIGN = 16  # floats: every packed array starts on a 64-byte boundary


def pack_layers(*stacks):
    """Layer lists -> (lbuf (N,) float32 read-only, one (n_layers, TABLE_COLUMNS) int64 table per list)."""
    pieces, size = [], 0

    def put(array) -> int:
        nonlocal size
        array = np.ascontiguousarray(array, np.float32).ravel()
        offset = size
        pieces.append(array)
        pad = -array.size % _ALIGN
        if pad:
            pieces.append(np.zeros(pad, np.float32))
        size += array.size + pad
        return offset

    tables = []
    for layers in stacks:
        table = np.zeros((len(layers), TABLE_COLUMNS), np.int64)
        for row, layer in zip(table, layers, strict=True):
            row[T_B] = row[T_EPS] = -1
            if isinstance(layer, Embedding):
                row[T_KIND], row[T_IN], row[T_OUT] = K_EMBEDDING, layer.vocab_size, layer.out_features
                row[T_W] = put(layer.table)
            elif isinstance(layer, Linear):
                out, n_in = layer.weight.shape
                nblk = -(-out // LB)
                padded = np.zeros((nblk * LB, n_in), np.float32)
                padded[:out] = layer.weight
                row[T_KIND], row[T_IN], row[T_OUT], row[T_NBLK] = K_LINEAR, n_in, out, nblk
                row[T_W] = put(padded.reshape(nblk, LB, n_in).transpose(0, 2, 1))  # (nblk, in, LB) slabs
                if layer.bias is not None:
                    bias = np.zeros(nblk * LB, np.float32)
                    bias[:out] = layer.bias
                    row[T_B] = put(bias)
                row[T_ACT] = ACTIVATION_CODES[layer.activation]
            elif isinstance(layer, Activation):
                row[T_KIND], row[T_IN], row[T_OUT] = K_ACTIVATION, layer.features, layer.features
                row[T_ACT] = ACTIVATION_CODES[layer.kind]
            elif isinstance(layer, LayerNorm):
                n = layer.in_features
                row[T_KIND], row[T_IN], row[T_OUT] = K_LAYER_NORM, n, n
                row[T_W], row[T_B] = put(layer.weight), put(layer.bias)
                row[T_EPS] = put(np.array([layer.eps], np.float32))
            else:
                raise TypeError(f"pack_layers: {type(layer).__name__} is not a row-wise layer")
        table.flags.writeable = False
        tables.append(table)
    lbuf = np.concatenate(pieces) if pieces else np.zeros(_ALIGN, np.float32)
    lbuf.flags.writeable = False
    return (lbuf, *tables)


class ModelLayers:
    """The layers around one Engine's LSTM stack, packed; built by Engine when the spec has any."""

    def __init__(self, spec):
        self.vocab_size = spec.vocab_size
        self.in_features = spec.in_features  # None for token models
        self.lstm_input = spec.input_size
        self.out_features = spec.out_features
        self.select = spec.post[0] if spec.selects_last else None  # SelectLast or None
        head = spec.post[1:] if self.select is not None else spec.post
        self.lbuf, self.pre_table, self.post_table = pack_layers(spec.pre, head)
        self._strides = {id(t): int(scratch_stride(t)) for t in (self.pre_table, self.post_table)}
        self._step_floats = None  # step_one's scratch, known once an engine is at hand
        self._fast = None  # step_one's closed dispatcher, built by the first step()

    # ---- run(): sequences ---------------------------------------------------------------------------
    def sequence_input(self, x, batch_first: bool):
        """x as the source model takes it -> (the LSTM's input (T, B, I) float32 time-major, squeeze).
        squeeze: the input had no batch axis ((T,) ids or (T, F) features)."""
        if self.vocab_size is not None:
            ids = token_ids(x, self.vocab_size, check_range=False)
            if ids.ndim not in (1, 2):
                raise InputError(f"token ids: expected (T,) or (T, B) ((B, T) with batch_first=True), "
                                 f"found shape {ids.shape}")
            squeeze = ids.ndim == 1
            ids2 = ids[:, None] if squeeze else (ids.T if batch_first else ids)
            _check_nonempty(ids2.shape, np.shape(x))
            T, B = ids2.shape
            rows = np.empty((T * B, self.lstm_input), np.float32)
            flat = np.ascontiguousarray(ids2, dtype=np.int64).reshape(-1)
            self._tokens_rows(flat, rows, x)
            return rows.reshape(T, B, -1), squeeze
        x3, squeeze = feature_sequence(x, self.in_features, batch_first)
        if not self.pre_table.shape[0]:
            return x3, squeeze
        T, B, _ = x3.shape
        rows = np.empty((T * B, self.lstm_input), np.float32)
        self._rows(self.pre_table, x3.reshape(T * B, -1), rows)
        return rows.reshape(T, B, -1), squeeze

    def sequence_output(self, y, final_h, lens, squeeze: bool, batch_first: bool, every_step: bool = False):
        """The head on the LSTM's output. y (T, B, D*Hout) time-major, final_h (L, D, B, Hout), lens (B,).

        Returns (T, B, C) per step ((B, T, C) with batch_first, (T, C) when squeezed), or (B, C) / (C,)
        when the model selects the last step (every_step: per step anyway, as step_chunk returns)."""
        T, B, F = y.shape
        if self.select is not None and not every_step:
            rows = np.empty((B, F), np.float32)
            if self.select.state:  # h_n of each direction of the last layer, directions concatenated
                rows[...] = final_h[-1].transpose(1, 0, 2).reshape(B, F)
            else:
                select_last(y, lens, rows)
            out = self._head(rows)
            return out[0] if squeeze else out
        out = self._head(y.reshape(T * B, F)).reshape(T, B, -1)
        if squeeze:
            return out[:, 0]
        return np.ascontiguousarray(out.transpose(1, 0, 2)) if batch_first else out

    # ---- step(): one frame or token per stream ----------------------------------------------------------
    def step(self, engine, x_t, state):
        """Engine.step of a whole model: one numba call for one stream (step_one), else the checked path:
        the input stage, the engine's own LSTM step (Engine._step_checked), the output stage."""
        if engine.streamable and not (engine._step_parallel and numba.get_num_threads() > 1):
            out = self.step_one(engine, x_t, state)
            if out is not None:
                return out
            if isinstance(state, State) and state.batch == 1:
                state.scratch(self.step_scratch(engine))  # so that the next call is one call
        if not engine.streamable:
            raise InputError("step() needs a model without reverse directions (a reverse pass needs the "
                             "future); use run() on the whole sequence")
        if not isinstance(state, State):
            raise InputError(f"state must be a fastlstm State (from Engine.new_state), got {type(state).__name__}")
        x, squeeze = self.step_input(x_t, state.scratch)
        engine._step_checked(x, state)
        return self.step_output(state.h[-1, 0], squeeze, state.scratch)

    def step_one(self, engine, x_t, state):
        """The whole step of one stream in one numba call (kernels/model_step.py), or None when this call
        is not the common case (a batch, another dtype, a first use of the scratch...): the caller then
        takes its checked path. The closed dispatcher checks the argument types in C (a Python int or an
        (F,) float32 frame, a batch-1 State); the kernel checks the shapes and the token's range."""
        if self.vocab_size is not None:
            if type(x_t) is not int:  # numba's refusal of other types costs ~1 ms: do not ask it
                return None
        elif not (type(x_t) is np.ndarray and x_t.dtype == np.float32 and x_t.ndim == 1):
            return None
        if getattr(state, "_scratch", None) is None:
            return None
        fast = self._fast
        if fast is None:
            fast = self._fast = closed_model_step(self.vocab_size is not None)
        out = np.empty(self.out_features, np.float32)
        try:
            status = fast(engine._wbuf, engine._meta, self.lbuf, self.pre_table, self.post_table, x_t,
                          state.h, state.c, state._scratch, out)
        except (TypeError, AttributeError):  # not the compiled argument types, or not a State
            return None
        if status == STEP_DONE:
            return out
        if status == BAD_TOKEN:
            token_ids(x_t, self.vocab_size)  # raises the InputError naming it
        return None

    def step_scratch(self, engine) -> int:
        """Floats of State scratch step_one needs (the checked path makes sure a State has them)."""
        if self._step_floats is None:
            self._step_floats = int(model_step_floats(engine._meta, self.pre_table, self.post_table))
        return self._step_floats

    def step_input(self, x_t, scratch_of):
        """x_t (a token id, (B,) ids, (F,) or (B, F) features) -> (the LSTM's input (B, I) float32, squeeze).
        scratch_of(n) gives the caller's scratch (the State's) of at least n floats."""
        if self.vocab_size is not None:
            ids = token_ids(x_t, self.vocab_size, check_range=False)
            if ids.ndim > 1:
                raise InputError(f"x_t: expected a token id or (B,) token ids, found shape {ids.shape}")
            squeeze = ids.ndim == 0
            flat = np.ascontiguousarray(ids.reshape(-1), dtype=np.int64)
            if flat.size == 0:
                raise InputError("x_t: expected at least one token id, found an empty array")
            rows = np.empty((flat.size, self.lstm_input), np.float32)
            self._tokens_rows(flat, rows, x_t, scratch_of)
            return rows, squeeze
        x, squeeze = feature_frame(x_t, self.in_features)
        if not self.pre_table.shape[0]:
            return x, squeeze
        rows = np.empty((x.shape[0], self.lstm_input), np.float32)
        self._rows(self.pre_table, x, rows, scratch_of)
        return rows, squeeze

    def step_output(self, h_last, squeeze: bool, scratch_of):
        """The head on the last layer's new h (B, Hout): (B, C), or (C,) when squeezed."""
        out = self._head(h_last, scratch_of)
        return out[0] if squeeze else out

    # ---- kernels --------------------------------------------------------------------------------------
    def _head(self, rows, scratch_of=None):
        if not self.post_table.shape[0]:
            return rows.copy()
        out = np.empty((rows.shape[0], self.out_features), np.float32)
        self._rows(self.post_table, rows, out, scratch_of)
        return out

    def _scratch_floats(self, table, n_rows: int) -> int:
        """layers_scratch_floats(table, n_rows), without a numba call."""
        return 2 * min(max(n_rows, 1), ROW_CHUNK) * self._strides[id(table)]

    def _rows(self, table, x, out, scratch_of=None):
        need = self._scratch_floats(table, x.shape[0])
        scratch = scratch_of(need) if scratch_of is not None else np.empty(need, np.float32)
        if not rows_forward(self.lbuf, table, np.ascontiguousarray(x), out, scratch):
            raise RuntimeError("fastlstm internal error: the layer kernel refused shapes the engine built; "
                               "please report it")

    def _tokens_rows(self, ids, out, given, scratch_of=None):
        """The embedding (and the layers after it) on ids (N,) int64; `given` is what the caller passed, for
        the message naming the first id outside the vocabulary (the kernel finds it)."""
        need = self._scratch_floats(self.pre_table, ids.shape[0])
        scratch = scratch_of(need) if scratch_of is not None else np.empty(need, np.float32)
        status = tokens_forward(self.lbuf, self.pre_table, ids, out, scratch)
        if status >= 0:
            token_ids(given, self.vocab_size)  # raises the InputError naming it where the caller put it
        if status != -1:
            raise RuntimeError(f"fastlstm internal error: the embedding kernel returned {status}; please report it")


_closed: dict = {}


def closed_model_step(tokens: bool):
    """token_step (tokens) or frame_step compiled for one batch-1 stream and nothing else (as fastcall.py
    does for the LSTM step): read-only packed buffers and tables, an int64 token or a writable (F,)
    float32 frame, h and c (L, 1, 1, H*), scratch and out writable float32 vectors."""
    if tokens not in _closed:
        import numba

        f32, i64 = np.zeros(16, np.float32), np.zeros((1, TABLE_COLUMNS), np.int64)
        wbuf, meta, table = f32.copy(), np.zeros((1, 16), np.int64), i64
        for a in (wbuf, meta, table):
            a.flags.writeable = False
        state = np.zeros((1, 1, 1, 16), np.float32)
        x = np.int64(0) if tokens else np.zeros(16, np.float32)
        kernel = numba.njit(**JIT)((token_step if tokens else frame_step).py_func)
        kernel.compile(tuple(numba.typeof(a) for a in (wbuf, meta, wbuf, table, table, x, state, state, f32, f32)))
        kernel.disable_compile()
        _closed[tokens] = kernel
    return _closed[tokens]


# ------------------------------------------------------------------------------------------- validation


def token_ids(x, vocab: int, check_range: bool = True) -> np.ndarray:
    """x as an int64 array of token ids in [0, vocab); InputError naming the first bad one. Integer arrays
    (and Python ints) are taken as they are; float arrays only when every value is a whole number (e.g.
    the float ids a Keras model takes). check_range=False leaves the range of integer arrays to the
    kernel (tokens_forward), which finds a bad id in nanoseconds; the caller then calls again for the message."""
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
    return np.ascontiguousarray(x3, dtype=np.float32), squeeze


def feature_frame(x_t, size: int):
    """Float frame (F,) or (B, F) -> ((B, F) float32 C-contiguous, squeeze)."""
    x = _float_array(x_t, "x_t", f"({size},) or (B, {size})")
    squeeze = x.ndim == 1
    if squeeze:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != size or x.shape[0] < 1:
        raise InputError(f"x_t: expected shape ({size},) or (B, {size}), found {np.shape(x_t)}")
    return np.ascontiguousarray(x, dtype=np.float32), squeeze


def _float_array(x, what: str, expected: str) -> np.ndarray:
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{what}: expected an array of shape {expected}, found {type(x).__name__} ({exc})") from None
    if not np.issubdtype(a.dtype, np.floating):
        raise InputError(f"{what}: expected a floating point array (float32 preferred), found {a.dtype}; "
                         f"this model takes features, not token ids")
    return a
