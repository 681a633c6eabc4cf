"""Engine: immutable packed weights shared by every stream; run() a sequence, step() one frame."""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .kernels.pack import pack_rows, padded_units
from .kernels.recurrence import cell_params, recurrence
from .spec import ModelSpec
from .state import State, check_state

BLOCK = 16  # hidden units per packed block (4*BLOCK gate rows share the cache while updated)


class PackedDirection:
    """One layer-direction in kernel layout. Shapes (Hp = H padded to whole blocks):
    W (4Hp, I)  b (4Hp,)  R (4Hp, Hout)  peep (3, H) or (0, H)  proj (Hout, H) or (0, 0)  cell (11,)"""

    __slots__ = ("W", "b", "R", "peep", "proj", "cell", "reverse", "default_cell")

    def __init__(self, ds, hidden_size: int):
        H = hidden_size
        self.W = pack_rows(ds.W, H, BLOCK)
        self.b = pack_rows(ds.b, H, BLOCK)
        self.R = pack_rows(ds.R, H, BLOCK)
        self.peep = ds.peephole if ds.peephole is not None else np.zeros((0, H), np.float32)
        self.proj = ds.proj if ds.proj is not None else np.zeros((0, 0), np.float32)
        self.cell = cell_params(ds.options)
        self.reverse = bool(ds.reverse)
        self.default_cell = ds.options.is_default and ds.peephole is None
        for name in ("W", "b", "R", "peep", "proj"):
            getattr(self, name).flags.writeable = False


class Engine:
    """A loaded model. Immutable after construction; share one Engine between threads and streams."""

    def __init__(self, spec: ModelSpec):
        spec.validate()
        self.spec = spec
        self.num_layers = spec.num_layers
        self.num_directions = spec.num_directions
        self.input_size = spec.input_size
        self.hidden_size = spec.hidden_size
        self.output_size = spec.output_size
        self.padded_hidden = padded_units(spec.hidden_size, BLOCK)
        self.layers = [[PackedDirection(ds, spec.hidden_size) for ds in layer] for layer in spec.layers]
        self.streamable = all(not pd.reverse for layer in self.layers for pd in layer)
        self._default_state = self.new_state(1)

    # ---- state -------------------------------------------------------------------------------
    def new_state(self, batch: int = 1) -> State:
        """Zero state for `batch` streams: h (L, D, B, Hout), c (L, D, B, H)."""
        if not isinstance(batch, (int, np.integer)) or isinstance(batch, bool) or batch < 1:
            raise InputError(f"batch must be a positive integer, got {batch!r}")
        return State.zeros(self.num_layers, self.num_directions, int(batch), self.hidden_size, self.output_size)

    def reset(self) -> None:
        """Zero the engine's default stream (the one step() uses when state=None)."""
        self._default_state.zero_()

    @property
    def default_state(self) -> State:
        return self._default_state

    def _state_shapes(self, batch: int):
        L, D = self.num_layers, self.num_directions
        return (L, D, batch, self.output_size), (L, D, batch, self.hidden_size)

    # ---- run -------------------------------------------------------------------------------------
    def run(self, x, state: State | None = None, sequence_lens=None, batch_first: bool = False):
        """Run a whole sequence.

        x: (T, I) or (T, B, I) time-major, or (B, T, I) with batch_first=True.
        Returns y (T, D*Hout) / (T, B, D*Hout) (or (B, T, D*Hout) with batch_first) and the final
        State. The state passed in is not modified.
        """
        x3, squeeze = self._check_sequence(x, batch_first)
        T, B, _ = x3.shape
        lens = self._check_lens(sequence_lens, T, B)
        h_shape, c_shape = self._state_shapes(B)
        if state is None:
            final = self.new_state(B)
        else:
            check_state(state, h_shape, c_shape)
            final = state.copy()
        layer_input = x3
        Hp4 = 4 * self.padded_hidden
        for l, layer in enumerate(self.layers):
            out = np.empty((T, B, self.num_directions * self.output_size), dtype=np.float32)
            for d, pd in enumerate(layer):
                xw = (layer_input.reshape(T * B, -1) @ pd.W.T).reshape(T, B, Hp4)
                xw += pd.b
                y_dir = out[:, :, d * self.output_size : (d + 1) * self.output_size]
                recurrence(xw, pd.R, pd.peep, pd.proj, pd.cell, lens, pd.reverse, pd.default_cell,
                           BLOCK, final.h[l, d], final.c[l, d], y_dir)
            layer_input = out
        y = layer_input
        if batch_first:
            y = np.ascontiguousarray(y.transpose(1, 0, 2))
        return (y[:, 0] if batch_first else y[:, 0]) if squeeze else y, final

    # ---- step ------------------------------------------------------------------------------------
    def step(self, x_t, state: State | None = None):
        """Advance B streams by one frame. x_t: (I,) or (B, I) -> (Hout,) or (B, Hout).

        `state` is advanced in place; None uses the engine's default stream (batch 1).
        """
        if not self.streamable:
            raise InputError("step() needs a model without reverse directions (a reverse pass needs the "
                             "future); use run() on the whole sequence")
        if state is None:
            state = self._default_state
        x = np.asarray(x_t)
        squeeze = x.ndim == 1
        if squeeze:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise InputError(f"x_t: expected shape ({self.input_size},) or (B, {self.input_size}), found {x.shape}")
        B = x.shape[0]
        if not isinstance(state, State) or state.h.shape[2] != B:
            check_state(state, *self._state_shapes(B), what="state (batch must match x_t)")
        x = _as_float32(x, "x_t")
        ones = np.ones(B, dtype=np.int64)
        layer_input = x[None]
        for l, layer in enumerate(self.layers):
            pd = layer[0]
            xw = (layer_input[0] @ pd.W.T + pd.b)[None]
            y = np.empty((1, B, self.output_size), dtype=np.float32)
            recurrence(xw, pd.R, pd.peep, pd.proj, pd.cell, ones, False, pd.default_cell,
                       BLOCK, state.h[l, 0], state.c[l, 0], y)
            layer_input = y
        out = layer_input[0]
        return out[0] if squeeze else out

    # ---- validation helpers ----------------------------------------------------------------------
    def _check_sequence(self, x, batch_first: bool):
        x = np.asarray(x)
        if x.ndim == 2:
            x3, squeeze = x[:, None, :], True
        elif x.ndim == 3:
            x3, squeeze = (x.transpose(1, 0, 2) if batch_first else x), False
        else:
            raise InputError(f"x: expected (T, I) or (T, B, I), found ndim={x.ndim} shape {x.shape}")
        if x3.shape[2] != self.input_size:
            raise InputError(f"x: expected input size {self.input_size} in the last axis, found shape {x.shape}")
        if x3.shape[0] < 1 or x3.shape[1] < 1:
            raise InputError(f"x: sequence length and batch must be >= 1, found shape {x.shape}")
        return np.ascontiguousarray(_as_float32(x3, "x")), squeeze

    @staticmethod
    def _check_lens(sequence_lens, T: int, B: int) -> np.ndarray:
        if sequence_lens is None:
            return np.full(B, T, dtype=np.int64)
        lens = np.asarray(sequence_lens)
        if lens.shape != (B,) or not np.issubdtype(lens.dtype, np.integer):
            raise InputError(f"sequence_lens: expected {B} integers (one per batch row), found {lens.dtype} {lens.shape}")
        if lens.min() < 0 or lens.max() > T:
            raise InputError(f"sequence_lens: every length must be in [0, {T}], found {lens.tolist()}")
        return lens.astype(np.int64)

    def __repr__(self) -> str:
        return (f"Engine(input={self.input_size}, hidden={self.hidden_size}, output={self.output_size}, "
                f"layers={self.num_layers}, directions={self.num_directions})")


def _as_float32(x: np.ndarray, what: str) -> np.ndarray:
    if x.dtype == np.float32:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"{what}: expected a floating point array (float32 preferred), found {x.dtype}")
    return x.astype(np.float32)
