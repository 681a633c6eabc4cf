"""Engine: immutable packed weights shared by every stream; run() a sequence, step() one frame."""

from __future__ import annotations

import numba
import numpy as np

from .errors import InputError
from .fastcall import closed_step_kernel
from .kernels.pack import BLOCK, M_HOUT, M_I, pack_model, padded_units
from .kernels.recurrence import (
    project_all,
    project_parallel,
    run_parallel,
    run_serial,
    scratch_size,
    step_parallel,
    step_stack,
)
from .spec import ModelSpec
from .stages import ModelLayers
from .state import State, check_state


class PackedDirection:
    """One layer-direction: its row of the packed model's offset table (see kernels/pack.py)."""

    __slots__ = ("meta", "reverse")

    def __init__(self, meta: np.ndarray, row: int, reverse: bool):
        self.meta = meta[row]  # (META_COLUMNS,) int64
        self.reverse = reverse


class Engine:
    """A loaded model. Immutable after construction; share one Engine between threads and streams."""

    def __init__(self, spec: ModelSpec):
        if not isinstance(spec, ModelSpec):
            raise InputError(f"Engine(spec) expects a fastlstm ModelSpec (from converters or format.read_spec), "
                             f"got {type(spec).__name__}; to open a file use fastlstm.load(path)")
        spec.validate()
        self.spec = spec
        self.num_layers = spec.num_layers
        self.num_directions = spec.num_directions
        self.input_size = spec.input_size
        self.hidden_size = spec.hidden_size
        self.output_size = spec.output_size
        self.padded_hidden = padded_units(spec.hidden_size, BLOCK)
        # The whole model as one flat float32 buffer + an int64 table (a step crosses the numba
        # dispatcher with few arrays); PackedDirection keeps views of it.
        self._wbuf, self._meta = pack_model(spec)
        D = spec.num_directions
        self.layers = [[PackedDirection(self._meta, l * D + d, bool(ds.reverse)) for d, ds in enumerate(layer)]
                       for l, layer in enumerate(spec.layers)]
        # a step reads every layer's W and R: H * (I + Hout) weights per layer-direction, on average
        step_work = spec.hidden_size * float(np.mean(self._meta[:, M_I] + self._meta[:, M_HOUT]))
        self._step_parallel = step_work >= STEP_PARALLEL_MIN_WORK
        self.streamable = all(not pd.reverse for layer in self.layers for pd in layer)
        # step()'s one-call path, built by the first step(); engines big enough to step in parallel take
        # the checked path when more than one thread is allowed (~1.5 µs, small next to their step)
        self._fast_step = None
        self._default_state = self.new_state(1)
        # ---- whole models: the layers before / after the LSTM (stages.py); None for a bare LSTM
        self._layers = ModelLayers(spec) if (spec.pre or spec.post) else None
        self.vocab_size = spec.vocab_size  # token ids in [0, V) when the model starts with an Embedding
        self.in_features = spec.in_features  # features per step otherwise
        self.out_features = spec.out_features  # what run() / step() return per row
        # The default stream is the one mutable part of an Engine: a second thread using it while one
        # already is gets an InputError. The guard is a one-token list used as a non-blocking try-lock:
        # list.pop()/append() are atomic (GIL; a per-object lock in free-threaded builds) and cost ~25 ns,
        # a threading.Lock acquire/release ~10x that. States passed explicitly need no guard.
        self._default_token = [True]

    # ---- state -------------------------------------------------------------------------------
    def new_state(self, batch: int = 1) -> State:
        """Zero state for `batch` streams: h (L, D, B, Hout), c (L, D, B, H)."""
        if not isinstance(batch, (int, np.integer)) or isinstance(batch, bool) or batch < 1:
            raise InputError(f"batch must be a positive integer, got {batch!r}")
        return State.zeros(self.num_layers, self.num_directions, int(batch), self.hidden_size, self.output_size)

    def reset(self) -> None:
        """Zero the engine's default stream (the one step() uses when state=None)."""
        self._on_default_stream(_zero_state, None)

    def _on_default_stream(self, method, x):
        """method(x, default_state) while holding the default stream; InputError if another thread holds
        it (the default stream is one stream: concurrent use would interleave two inputs)."""
        token = self._default_token
        try:
            token.pop()
        except IndexError:
            raise InputError("the engine's default stream is in use by another thread; give each thread "
                             "its own State (engine.new_state()) and pass it to step()") from None
        try:
            return method(x, self._default_state)
        finally:
            token.append(True)

    @property
    def default_state(self) -> State:
        return self._default_state

    def _state_shapes(self, batch: int):
        L, D = self.num_layers, self.num_directions
        return (L, D, batch, self.output_size), (L, D, batch, self.hidden_size)

    # ---- run -------------------------------------------------------------------------------------
    def run(self, x, state: State | None = None, sequence_lens=None, batch_first: bool = False):
        """Run a whole sequence.

        x: (T, I) or (T, B, I) time-major, or (B, T, I) with batch_first=True; for a model that starts
        with an Embedding, int token ids (T,), (T, B) or (B, T) with batch_first=True.
        Returns y (T, D*Hout) / (T, B, D*Hout) (or (B, T, D*Hout) with batch_first) and the final
        State; a whole model returns its head's output instead: (T, [B,] C) per step, or (B, C) / (C,)
        when it selects the last (valid) step. The state passed in is not modified.
        """
        return self._run(x, state, sequence_lens, batch_first, every_step=False)

    def _run(self, x, state, sequence_lens, batch_first, every_step):
        if self._layers is not None:  # ---- input stage: ids / features through the layers before the LSTM
            x3, squeeze = self._layers.sequence_input(x, batch_first)
        else:
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
        threads = _threads_for(B * self.hidden_size**2, PARALLEL_MIN_HIDDEN**2)  # for the recurrence
        xw = np.empty((T, B, Hp4), dtype=np.float32)  # input projection, reused by every direction
        for l, layer in enumerate(self.layers):
            out = np.empty((T, B, self.num_directions * self.output_size), dtype=np.float32)
            rows = layer_input.reshape(T * B, -1)
            project_threads = _threads_for(2 * rows.size * Hp4, PARALLEL_MIN_PROJECT_FLOP)
            for d, pd in enumerate(layer):
                y_dir = out[:, :, d * self.output_size : (d + 1) * self.output_size]
                self._project(pd, rows, xw.reshape(T * B, Hp4), project_threads)
                if threads > 1:
                    run_parallel(self._wbuf, pd.meta, xw, lens, final.h[l, d], final.c[l, d], y_dir, threads)
                else:
                    run_serial(self._wbuf, pd.meta, xw, lens, final.h[l, d], final.c[l, d], y_dir)
            layer_input = out
        y = layer_input
        if self._layers is not None:  # ---- output stage: the layers after the LSTM
            return self._layers.sequence_output(y, final.h, lens, squeeze, batch_first, every_step), final
        if squeeze:  # (T, I) in: (T, D*Hout) out, whatever batch_first says
            return y[:, 0], final
        if batch_first:
            y = np.ascontiguousarray(y.transpose(1, 0, 2))
        return y, final

    def _project(self, pd, x, xw, threads):
        """xw (N, 4Hp) = b + x (N, I) @ Wp, with step()'s kernels (bit-identical modes)."""
        if threads > 1:
            project_parallel(self._wbuf, pd.meta, x, xw, threads)
        else:
            project_all(self._wbuf, pd.meta, x, xw, 0, self.padded_hidden // BLOCK)

    # ---- step ------------------------------------------------------------------------------------
    def step(self, x_t, state: State | None = None):
        """Advance B streams by one frame. x_t: (I,) or (B, I) -> (Hout,) or (B, Hout).

        `state` is advanced in place; None uses the engine's default stream (batch 1).
        """
        if state is None:
            return self._on_default_stream(self.step, x_t)
        if self._layers is not None:  # a whole model: input stage, this LSTM step, output stage (stages.py)
            return self._layers.step(self, x_t, state)
        # The streaming case (one float32 (I,) frame, a batch-1 State) is one numba call: the closed
        # dispatcher checks the argument types in C and the kernel checks the shapes (step_fits), so
        # this side checks nothing. Any other input, or a refusal, takes the checked path, which
        # says what is wrong or handles it (batches, other dtypes, first use of the scratch).
        fast = self._fast_step
        if fast is None and self.streamable:
            fast = self._fast_step = closed_step_kernel()
        if fast is not None and not (self._step_parallel and numba.get_num_threads() > 1):
            try:
                if fast(self._wbuf, self._meta, x_t, state.h, state.c, state._scratch):
                    return state.h[-1, 0, 0].copy()  # a fresh (Hout,) array the caller may keep
            except (TypeError, AttributeError):  # not the compiled argument types, or not a State
                pass
        return self._step_checked(x_t, state)

    def _step_checked(self, x_t, state: State):
        if not self.streamable:
            raise InputError("step() needs a model without reverse directions (a reverse pass needs the "
                             "future); use run() on the whole sequence")
        try:
            x = np.asarray(x_t)
        except (ValueError, TypeError) as exc:  # ragged nested lists and the like
            raise InputError(f"x_t: expected an array of shape ({self.input_size},) or (B, "
                             f"{self.input_size}), found {type(x_t).__name__} ({exc})") from None
        squeeze = x.ndim == 1
        if squeeze:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise InputError(f"x_t: expected shape ({self.input_size},) or (B, {self.input_size}), "
                             f"found {np.shape(x_t)}")
        B = x.shape[0]
        check_state(state, *self._state_shapes(B), what="state (batch must match x_t)")
        x = np.ascontiguousarray(_as_float32(x, "x_t")).reshape(-1)  # (B*I,) rows, as the kernels read them
        scratch = state.scratch(scratch_size(self._meta, B))
        threads = numba.get_num_threads() if self._step_parallel and B == 1 else 1
        if threads > 1:
            stepped = step_parallel(self._wbuf, self._meta, x, state.h, state.c, scratch, threads)
        else:
            stepped = step_stack(self._wbuf, self._meta, x, state.h, state.c, scratch)
        if not stepped:  # check_state passed, so the kernel's own shape check cannot refuse
            raise RuntimeError("fastlstm internal error: the step kernel refused shapes that check_state "
                               "accepted; please report it")
        out = state.h[-1, 0].copy()
        return out[0] if squeeze else out

    def step_chunk(self, x, state: State | None = None):
        """Advance streams by a chunk of T frames in one call: x (T, I) -> y (T, Hout) for a batch-1 state,
        x (T, B, I) -> y (T, B, Hout) for a batch-B state. `state` is advanced in place (None: the default
        stream). Bit for bit the result of T step() calls (one summation order in every kernel), at
        the cost of one run() on the chunk. T = 0 is allowed and changes nothing.
        """
        if state is None:
            return self._on_default_stream(self.step_chunk, x)
        if not self.streamable:
            raise InputError("step_chunk() needs a model without reverse directions; use run()")
        x = np.asarray(x)
        if self._layers is None and x.ndim in (2, 3) and x.shape[0] == 0 and x.shape[-1] == self.input_size:
            check_state(state, *self._state_shapes(1 if x.ndim == 2 else x.shape[1]))
            return np.zeros((*x.shape[:-1], self.output_size), dtype=np.float32)
        y, final = self._run(x, state, None, False, every_step=True)
        state.h[...] = final.h
        state.c[...] = final.c
        return y

    # ---- validation helpers ----------------------------------------------------------------------
    def _check_sequence(self, x, batch_first: bool):
        try:
            x = np.asarray(x)
        except (ValueError, TypeError) as exc:  # ragged nested lists and the like
            raise InputError(f"x: expected an array of shape (T, {self.input_size}) or (T, B, "
                             f"{self.input_size}), found {type(x).__name__} ({exc})") from None
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
        try:
            lens = np.asarray(sequence_lens)
        except (ValueError, TypeError):
            raise InputError(f"sequence_lens: expected {B} integers (one per batch row), found "
                             f"{type(sequence_lens).__name__}") from None
        if lens.shape != (B,) or not np.issubdtype(lens.dtype, np.integer):
            raise InputError(f"sequence_lens: expected {B} integers (one per batch row), "
                             f"found {lens.dtype} {lens.shape}")
        if lens.min() < 0 or lens.max() > T:
            raise InputError(f"sequence_lens: every length must be in [0, {T}], found {lens.tolist()}")
        return lens.astype(np.int64)

    def __repr__(self) -> str:
        return (f"Engine(input={self.input_size}, hidden={self.hidden_size}, output={self.output_size}, "
                f"layers={self.num_layers}, directions={self.num_directions})")


# The per-step parallel region pays once a step has the work of a batch-1 step at this hidden size
# (measured at B=1: 2 threads 0.7x at H=256, 1.2x at 384, 1.6x at 512; docs/performance.md). A batch of
# B rows does B times the work per step: B * H^2 >= PARALLEL_MIN_HIDDEN^2.
PARALLEL_MIN_HIDDEN = 384
# step() opens one parallel region per layer and call, over W and R (run's per-step region covers only R),
# so it pays from a smaller H: 2 threads vs 1 at B=1, I=H (step_parallel vs step_stack, best of 15): 0.83x
# at H=128, 1.1x at 192, 1.55x at 256, 2.3x at 320. Engines from here up also leave step()'s one-call path
# for the checked one (~1.5 µs more per call), hence H=224, not 192. Work = H * (I + Hout) per layer.
STEP_PARALLEL_MIN_WORK = 224 * (224 + 224)
# The input projection is one parallel region for the whole sequence: worth it from ~20 MFLOP (~150 µs).
PARALLEL_MIN_PROJECT_FLOP = 20_000_000


def _threads_for(work: int, crossover: int) -> int:
    """1 below the measured crossover, else every thread run() may use."""
    return 1 if work < crossover else numba.get_num_threads()


def _zero_state(_x, state: State) -> None:
    state.zero_()


def _as_float32(x: np.ndarray, what: str) -> np.ndarray:
    if x.dtype == np.float32:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"{what}: expected a floating point array (float32 preferred), found {x.dtype}")
    return x.astype(np.float32)
