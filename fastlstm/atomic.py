"""Write a file all at once or not at all: a temporary file in the same directory, renamed into place."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable


def write_atomically(path: str | os.PathLike, chunks: Iterable[bytes], prefix: str = ".fastlstm-") -> None:
    """Write `chunks` to `path`; on any failure (including KeyboardInterrupt) no file is left behind."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
