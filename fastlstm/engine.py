"""Engine: the immutable plan (packed weights) shared by every stream; run() a sequence, step() a frame.

A spec with layers around the LSTM (a whole model) makes a stages.ModelEngine, an Engine whose run() and
step() also run those layers; a bare LSTM's Engine has none of that code on its paths."""

from __future__ import annotations

import numpy as np

from . import calibration, threads
from .errors import InputError
from .kernels.entry import OP_RUN, OP_STEP, OP_WORKER, kernel
from .kernels.warmload import light_first_refresh
from .plan import build_plan
from .spec import ModelSpec
from .state import State, check_state
from .threads import TWO_INSIDE, _budget, _callers

_F32 = np.dtype(np.float32)
_NO_LENS = np.zeros(1, np.int64)  # step's unused lens argument


class Engine:
    """A loaded model. Immutable after construction; share one Engine between threads and streams."""

    def __new__(cls, spec=None, *args, **kwargs):
        if cls is Engine and isinstance(spec, ModelSpec) and (spec.pre or spec.post):
            from .stages import ModelEngine  # a whole model (stages.py imports this module)

            cls = ModelEngine
        return super().__new__(cls)

    def __init__(self, spec: ModelSpec, *, release_source=None, _calibrating: int = 0):
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
        self.plan = build_plan(spec, release_source)
        self.padded_hidden = self.plan.padded_hidden
        self.streamable = all(not ds.reverse for layer in spec.layers for ds in layer)
        self.vocab_size = spec.vocab_size  # token ids in [0, V) when the model starts with an Embedding, else None
        self.in_features = spec.in_features  # features per step otherwise
        self.out_features = spec.out_features  # what run() / step() return per row (D*Hout for a bare LSTM)
        self._state_extra = self.plan.step_floats if self.streamable else 0  # a whole model's step scratch
        self._wbuf, self._variant = self.plan.wbuf, self.plan.variant
        self._args = (self._wbuf, self._variant)
        self._out_shapes = {1: (spec.output_size,), 2: (1, spec.output_size)}  # by the frame's ndim, batch 1
        self._team = None  # threads.Team, made by the first call that uses more than one thread
        self._ctl = _SOLO_CTL  # its control block (a call that runs alone never reads it)
        self._compiled = False  # True after a first kernel call (workers must not compile it themselves)
        self._calibrating = _calibrating  # calibration.py's engines: a team whenever the budget allows
        # Work per phase (FMAs) against the measured crossovers (tuning.py): is a team worth it?
        I, H, Hout = spec.input_size, spec.hidden_size, spec.output_size
        self._step_work = 4 * H * (max(I, spec.num_directions * Hout) + Hout)  # per stream and layer
        self._run_work = 4 * H * Hout  # per stream and step of the recurrence
        self._default_state = self.new_state(1)
        # The default stream is the one mutable part of an Engine: a second thread using it while one
        # already is gets an InputError. The guard is a one-token list used as a non-blocking try-lock:
        # list.pop()/append() are atomic (GIL) and cost ~25 ns, a threading.Lock ~10x that.
        self._default_token = [True]

    # ---- state -------------------------------------------------------------------------------
    def new_state(self, batch: int = 1) -> State:
        """Zero state for `batch` streams: h (L, D, B, Hout), c (L, D, B, H)."""
        if not isinstance(batch, (int, np.integer)) or isinstance(batch, bool) or batch < 1:
            raise InputError(f"batch must be a positive integer, got {batch!r}")
        return State.zeros(self.num_layers, self.num_directions, int(batch), self.hidden_size, self.output_size,
                           self._state_extra)

    def reset(self) -> None:
        """Zero the engine's default stream (the one step() uses when state=None)."""
        self._on_default_stream(_zero_state, None, None)

    def _on_default_stream(self, method, x, out):
        """method(x, default_state, out) while holding the default stream; InputError if another thread
        holds it (the default stream is one stream: concurrent use would interleave two inputs)."""
        token = self._default_token
        try:
            token.pop()
        except IndexError:
            raise InputError("the engine's default stream is in use by another thread; give each thread "
                             "its own State (engine.new_state()) and pass it to step()") from None
        try:
            return method(x, self._default_state, out)
        finally:
            token.append(True)

    @property
    def default_state(self) -> State:
        return self._default_state

    def _state_shapes(self, batch: int):
        L, D = self.num_layers, self.num_directions
        return (L, D, batch, self.output_size), (L, D, batch, self.hidden_size)

    # ---- threads -------------------------------------------------------------------------------
    def _team_for(self, work: int, kind: str) -> int:
        """Threads for a call whose phases each do `work` FMAs (kind "step" or "run"): the whole budget when
        the work reaches the crossover measured on this host (calibration.py) and no other Python thread is
        inside a kernel or was, together with another, in the last threads.CONTENDED_S seconds; else 1."""
        size = threads.budget()
        if size == 1 or not self._compiled or work < _SMALLEST_TEAM_WORK or not threads.alone():
            return 1  # (the first call compiles the kernel in the caller's thread; workers start after it)
        if not self._calibrating and work < getattr(calibration.crossovers(size), kind):
            return 1
        team = self._team
        if team is None:
            team = self._team = threads.Team(kernel, (OP_WORKER, *self._args, *_worker_dummies()))
            self._ctl = team.ctl
        team.ensure(size)
        return size

    def _call(self, *args) -> int:
        if not self._compiled:
            return self._first_call(*args)
        threads.enter()
        try:
            return kernel(*args)
        finally:
            threads.leave()

    def _first_call(self, *args) -> int:
        """An engine's first kernel call: it loads the kernel from the cache (without numba's registry refresh,
        kernels/warmload.py) or compiles it."""
        threads.enter()
        try:
            with light_first_refresh():
                done = kernel(*args)
        finally:
            threads.leave()
        self._compiled = True
        return done

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
        final = self._final_state(state, B)
        y = self._run_stack(x3, lens, final)
        if squeeze:  # (T, I) in: (T, D*Hout) out, whatever batch_first says
            return y[:, 0], final
        if batch_first:
            y = np.ascontiguousarray(y.transpose(1, 0, 2))
        return y, final

    def _final_state(self, state: State | None, B: int) -> State:
        """The State run() advances and returns: a copy of `state` (checked), or zeros."""
        if state is None:
            return self.new_state(B)
        check_state(state, *self._state_shapes(B))
        return state.copy()

    def _run_stack(self, x3: np.ndarray, lens: np.ndarray, final: State) -> np.ndarray:
        """The LSTM stack on x3 (T, B, I) float32 C-contiguous from final's h and c (advanced in place);
        returns y (T, B, D*Hout)."""
        T, B, _ = x3.shape
        D = self.num_directions
        team = self._team_for(B * self._run_work, "run")
        layer_input = x3
        for l in range(self.num_layers):
            out = np.empty((T, B, D * self.output_size), dtype=np.float32)
            for d in range(D):
                done = self._call(OP_RUN, *self._args, layer_input.reshape(-1), out.reshape(-1), final._buf, lens,
                                  self._ctl, T, B, l * D + d, team)
                if not done:  # every size was checked above, so the kernel cannot refuse them
                    raise RuntimeError("fastlstm internal error: the run kernel refused validated shapes; "
                                       "please report it")
            layer_input = out
        return layer_input

    # ---- step ------------------------------------------------------------------------------------
    def step(self, x_t, state: State | None = None, out=None):
        """Advance B streams by one frame. x_t: (I,) or (B, I) -> (Hout,) or (B, Hout).

        `state` is advanced in place; None uses the engine's default stream (batch 1). `out`: a float32
        C-contiguous array of B*Hout elements to write the result into (returned), so a step allocates
        nothing; None returns a new array.
        """
        if state is None:
            return self._on_default_stream(self.step, x_t, out)
        # The common case (float32 C-contiguous frames, a State, no out or a float32 one) is one kernel call
        # and a few attribute checks here: the kernel checks every size against the plan and the state's
        # shape words, and refuses (0) instead of indexing out of bounds. Anything else, or a refusal, goes
        # through _step_checked, which names the problem. (Each check costs tens of ns: budgeted, ~1 us
        # of Python in all at H = 64; docs/performance.md.)
        if type(x_t) is np.ndarray and x_t.dtype is _F32 and type(state) is State and x_t.flags.c_contiguous:
            B = state._batch
            if x_t.ndim != 2 and (x_t.ndim != 1 or B != 1):  # (I,) is one stream's frame, (B, I) a batch's
                return self._step_checked(x_t, state, out)
            y = self._fast_step(x_t if x_t.ndim == 1 else x_t.reshape(-1), self._ctl, state, B,
                                self._out_shapes[x_t.ndim] if B == 1 else (B, self.output_size), out)
            if y is not None:
                return y
        return self._step_checked(x_t, state, out)

    def _fast_step(self, x: np.ndarray, lens: np.ndarray, state: State, B: int, shape: tuple, out):
        """The end of step()'s fast path (this and ModelEngine's): y = out (if it is a C-contiguous float32
        array: the kernel checks its size) or a new array of `shape`, then one kernel call with the caller
        registered as inside a kernel (threads.enter()/leave(), inlined). Returns y, or None when the
        checked path must take over (an `out` of another kind, or the kernel refused the sizes)."""
        if out is None:
            y = np.empty(shape, np.float32)
        elif type(out) is np.ndarray and out.dtype is _F32 and out.flags.c_contiguous and out.flags.writeable:
            y = out
        else:
            return None
        team = self._team_for(B * self._step_work, "step") if _budget[0] > 1 else 1
        args = (OP_STEP, self._wbuf, self._variant, x, y if y.ndim == 1 else y.reshape(-1), state._buf, lens,
                self._ctl, 1, B, 0, team)
        if not self._compiled:
            return y if self._first_call(*args) else None
        _callers.append(None)
        if len(_callers) >= TWO_INSIDE:
            threads.contended()
        try:
            done = kernel(*args)
        finally:
            _callers.pop()
        return y if done else None

    def _step_checked(self, x_t, state: State, out):
        if not self.streamable:
            raise InputError("step() needs a model without reverse directions (a reverse pass needs the "
                             "future); use run() on the whole sequence")
        try:
            x = np.asarray(x_t)
        except (ValueError, TypeError) as exc:  # ragged nested lists and the like
            raise InputError(f"x_t: expected an array of shape ({self.input_size},) or (B, "
                             f"{self.input_size}), found {type(x_t).__name__} ({exc})") from None
        if x.ndim not in (1, 2) or x.shape[-1] != self.input_size:
            raise InputError(f"x_t: expected shape ({self.input_size},) or (B, {self.input_size}), "
                             f"found {np.shape(x_t)}")
        B = 1 if x.ndim == 1 else x.shape[0]
        check_state(state, *self._state_shapes(B), what="state (batch must match x_t)")
        x = np.ascontiguousarray(_as_float32(x, "x_t"))
        shape = (B, self.output_size) if x.ndim == 2 else (self.output_size,)
        if out is None:
            y = np.empty(shape, np.float32)
        else:
            if not (isinstance(out, np.ndarray) and out.dtype == np.float32 and out.flags.c_contiguous
                    and out.flags.writeable and out.size == B * self.output_size):
                found = (out.shape, out.dtype) if isinstance(out, np.ndarray) else type(out).__name__
                raise InputError(f"out: expected a writable C-contiguous float32 array of {B * self.output_size} "
                                 f"elements (shape {shape}), found {found}")
            y = out
        team = self._team_for(B * self._step_work, "step")
        if not self._call(OP_STEP, *self._args, x.reshape(-1), y.reshape(-1), state._buf, _NO_LENS, self._ctl,
                          1, B, 0, team):
            raise RuntimeError("fastlstm internal error: the step kernel refused shapes that check_state "
                               "accepted; please report it")
        return y

    def step_chunk(self, x, state: State | None = None):
        """Advance streams by a chunk of T frames in one call: x (T, I) -> y (T, Hout) for a batch-1 state,
        x (T, B, I) -> y (T, B, Hout) for a batch-B state. `state` is advanced in place (None: the default
        stream). Bit for bit the result of T step() calls (one summation order in every kernel), at
        the cost of one run() on the chunk. T = 0 is allowed and changes nothing.
        """
        if state is None:
            return self._on_default_stream(lambda x_, st, _out: self.step_chunk(x_, st), x, None)
        if not self.streamable:
            raise InputError("step_chunk() needs a model without reverse directions; use run()")
        x = np.asarray(x)
        if x.ndim in (2, 3) and x.shape[0] == 0 and x.shape[-1] == self.input_size:
            check_state(state, *self._state_shapes(1 if x.ndim == 2 else x.shape[1]))
            return np.zeros((*x.shape[:-1], self.output_size), dtype=np.float32)
        y, final = self.run(x, state)
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
        return np.ascontiguousarray(lens, dtype=np.int64)

    def __repr__(self) -> str:
        return (f"Engine(input={self.input_size}, hidden={self.hidden_size}, output={self.output_size}, "
                f"layers={self.num_layers}, directions={self.num_directions})")


_SOLO_CTL = np.zeros(1, np.int64)  # the control block of a call that runs alone (never read)
# Below this work per phase no host's team pays (the smallest size calibration.py measures): such calls
# never trigger the calibration.
_SMALLEST_TEAM_WORK = 4 * calibration.SIZES[0] * calibration.SIZES[0]


def _worker_dummies():
    """A worker's per-call array arguments: never read (pointers come through the control block), but of
    the master's types, so the worker runs the very specialisation the master compiled."""
    return np.zeros(1, np.float32), np.zeros(1, np.float32), np.zeros(1, np.float32), np.zeros(1, np.int64)


def _zero_state(_x, state: State, _out) -> None:
    state.zero_()


def _as_float32(x: np.ndarray, what: str) -> np.ndarray:
    if x.dtype == np.float32:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"{what}: expected a floating point array (float32 preferred), found {x.dtype}")
    return x.astype(np.float32)
