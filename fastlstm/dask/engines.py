"""One Engine per model file per process: what each Dask worker keeps between tasks.

Tasks carry the model's path, never its weights. The first task on a worker process loads the file
(fastlstm.load memory-maps it and packs the weights once); later tasks find the Engine here. The key
is the path and the file's identity (device, inode, size, mtime), so a model replaced on disk under
the same name is loaded afresh, while the same file reached through another path or symlink is not.
"""

from __future__ import annotations

import os
import socket
import stat
import threading
from collections import OrderedDict

from ..api import load
from ..engine import Engine
from ..errors import FormatError

MAX_CACHED_ENGINES = 4  # distinct model files kept per process (oldest dropped first)

_lock = threading.Lock()  # a worker runs tasks in several threads: load each model once
_engines: OrderedDict[tuple, Engine] = OrderedDict()
_loads = 0


def model_identity(path: str | os.PathLike, where: str = "") -> tuple[str, int, int, int, int]:
    """(real path, st_dev, st_ino, st_size, st_mtime_ns) of a model file; FormatError if it is unreadable."""
    path = os.fspath(path)
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError as exc:
        raise FormatError(f"cannot read model {path}{where}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise FormatError(f"model {path}{where}: not a regular file")
    return real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def engine_for(path: str | os.PathLike, on_worker: bool = False) -> Engine:
    """The Engine of the model file at `path`, loaded at most once per file version and process.

    on_worker names this host in errors (a path missing on one machine of a cluster is the usual
    mistake of a multi-machine set-up).
    """
    global _loads
    where = f" (on host {socket.gethostname()})" if on_worker else ""
    key = model_identity(path, where)
    with _lock:
        engine = _engines.get(key)
        if engine is not None:
            _engines.move_to_end(key)
            return engine
        for _ in range(3):  # the file may be replaced while it is read: load until the identity holds still
            engine = load(path)
            after = model_identity(path, where)
            if after == key:
                break
            key = after
        else:
            raise FormatError(f"model {path}{where}: the file kept changing while it was loaded")
        _engines[key] = engine
        _loads += 1
        while len(_engines) > MAX_CACHED_ENGINES:
            _engines.popitem(last=False)
        return engine


def load_count() -> int:
    """How many model loads this process has done (tests check that a worker loads a model once)."""
    return _loads


def clear() -> None:
    with _lock:
        _engines.clear()
