"""Top-level functions: load / save packed files and thread control."""

from __future__ import annotations

import os

from . import format as _format
from .engine import Engine
from .spec import ModelSpec
from .threads import get_num_threads, set_num_threads

__all__ = ["get_num_threads", "load", "save", "set_num_threads"]


def save(spec: ModelSpec, path: str | os.PathLike) -> None:
    """Write a spec to a packed .fastlstm file (atomically)."""
    _format.save(spec, path)


def load(path: str | os.PathLike) -> Engine:
    """Open a packed .fastlstm file and build its Engine. Raises FormatError for a bad file."""
    return Engine(_format.read_spec(path))
