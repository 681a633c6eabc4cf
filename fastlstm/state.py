"""State: the mutable, per-stream part (h, c). The Engine holds everything else, immutable and shared."""

from __future__ import annotations

import numpy as np

from .errors import InputError


class State:
    """Recurrent state of B streams.

    h: (L, D, B, Hout) float32, writable     c: (L, D, B, H) float32, writable
    """

    __slots__ = ("h", "c")

    def __init__(self, h: np.ndarray, c: np.ndarray):
        self.h = h
        self.c = c

    @classmethod
    def zeros(cls, layers: int, directions: int, batch: int, hidden: int, output: int) -> State:
        return cls(
            np.zeros((layers, directions, batch, output), dtype=np.float32),
            np.zeros((layers, directions, batch, hidden), dtype=np.float32),
        )

    @property
    def batch(self) -> int:
        return self.h.shape[2]

    def copy(self) -> State:
        """An independent deep copy (snapshot) of this state."""
        return State(self.h.copy(), self.c.copy())

    def zero_(self) -> None:
        """Reset every stream to zeros, in place."""
        self.h.fill(0.0)
        self.c.fill(0.0)

    def __repr__(self) -> str:
        L, D, B, Hout = self.h.shape
        return f"State(layers={L}, directions={D}, batch={B}, hidden={self.c.shape[-1]}, output={Hout})"


def check_state(state, h_shape: tuple[int, ...], c_shape: tuple[int, ...], what: str = "state") -> None:
    """Refuse a state that does not belong to this model (wrong type, shape or dtype)."""
    if not isinstance(state, State):
        raise InputError(f"{what} must be a fastlstm State (from Engine.new_state), got {type(state).__name__}")
    for name, array, shape in (("h", state.h, h_shape), ("c", state.c, c_shape)):
        if not isinstance(array, np.ndarray) or array.shape != shape or array.dtype != np.float32:
            found = (array.shape, array.dtype) if isinstance(array, np.ndarray) else type(array).__name__
            raise InputError(f"{what}.{name}: expected float32 array of shape {shape}, found {found}")
        if not array.flags.c_contiguous or not array.flags.writeable:
            raise InputError(f"{what}.{name} must be a C-contiguous writable array")
