"""Top-level functions: load / save packed files and thread control."""

from __future__ import annotations

import os

import numba

from . import format as _format
from .engine import Engine
from .errors import InputError
from .spec import ModelSpec


def save(spec: ModelSpec, path: str | os.PathLike) -> None:
    """Write a spec to a packed .fastlstm file (atomically)."""
    _format.save(spec, path)


def load(path: str | os.PathLike) -> Engine:
    """Open a packed .fastlstm file and build its Engine. Raises FormatError for a bad file."""
    return Engine(_format.read_spec(path))


def set_num_threads(n: int) -> None:
    """Threads the kernels may use (at most NUMBA_NUM_THREADS, which defaults to the core count)."""
    limit = numba.config.NUMBA_NUM_THREADS
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= limit:
        raise InputError(f"threads must be an integer in [1, {limit}] (NUMBA_NUM_THREADS), got {n!r}")
    numba.set_num_threads(n)


def get_num_threads() -> int:
    return numba.get_num_threads()
