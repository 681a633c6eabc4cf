"""step()'s one-call path: a numba dispatcher closed to every argument type but the expected ones.

A normal numba dispatcher compiles a new specialisation for every new combination of argument types
(a float64 frame, a strided state...). The closed dispatcher holds only the streaming case's
signatures and has compilation disabled, so any other argument types raise TypeError inside numba's
C dispatch code; step() catches it and takes its checked path. Together with the shape check inside
the kernel (recurrence.step_fits) that lets step() check nothing in Python on its common path.
"""

from __future__ import annotations

import numba
import numpy as np

from .kernels.config import JIT
from .kernels.recurrence import step_one

_closed = None


def closed_step_kernel():
    """step_one compiled for a batch-1 step: wbuf, meta (read-only, as pack_model makes them), x (I,)
    float32, h and c (L, 1, 1, H*) float32 and a scratch vector, C-contiguous and writable. Built on
    the first step() (~0.2 s from numba's on-disk cache, so a process that only runs never pays it);
    one signature only, as each costs that much to load."""
    global _closed
    if _closed is None:
        wbuf, meta = np.zeros(16, np.float32), np.zeros((1, 16), np.int64)
        wbuf.flags.writeable = meta.flags.writeable = False
        vec, state = np.zeros(16, np.float32), np.zeros((1, 1, 1, 16), np.float32)
        closed = numba.njit(**JIT)(step_one.py_func)
        closed.compile(tuple(numba.typeof(a) for a in (wbuf, meta, vec, state, state, vec)))
        closed.disable_compile()
        _closed = closed
    return _closed
