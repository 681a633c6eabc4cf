"""Third-party output during a CLI command, held back so that a failure stays one line on stderr.

torch, onnx and numpy warn through Python's `warnings`; ONNX Runtime and torch's C++ side write log lines
straight to file descriptor 2. While a command runs, `Capture` records the warnings and points both
`sys.stderr` and descriptor 2 at a temporary file. Afterwards the CLI prints its own line, with
`summary()` appended on failure (how many warnings, from which libraries, the first one). `--debug`
runs without a capture, so everything shows as it happens. Part of the CLI layer.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import warnings
from pathlib import Path

MAX_HELD_BYTES = 1 << 20  # library output kept for the summary's line count


class Capture:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.warnings: list[warnings.WarningMessage] = []
        self.output = ""  # what libraries wrote to stderr meanwhile
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> Capture:
        if not self.enabled:
            return self
        self._held = tempfile.TemporaryFile()
        self._stack = contextlib.ExitStack()
        self._caught = self._stack.enter_context(warnings.catch_warnings(record=True))
        warnings.simplefilter("always")
        self._stack.enter_context(_descriptor_redirected(2, self._held.fileno()))
        self._text = self._stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
        return self

    def __exit__(self, *exc_info) -> bool:
        if self._stack is None:
            return False
        self._stack.close()  # sys.stderr and descriptor 2 are back before the CLI prints its line
        self._stack = None
        self.warnings = list(self._caught)
        with self._held:
            self._held.seek(0)
            raw = self._held.read(MAX_HELD_BYTES)
        self.output = self._text.getvalue() + raw.decode("utf-8", errors="replace")
        return False

    def summary(self) -> str:
        """'' or ' (2 warnings from torch held back, the first: UserWarning: ...; --debug shows them)'."""
        parts = []
        if self.warnings:
            origins = sorted({_origin(w.filename) for w in self.warnings})
            first = self.warnings[0]
            message = _clean(f"{first.category.__name__}: {first.message}")[:200]
            n = len(self.warnings)
            parts.append(f"{n} warning{'s' * (n != 1)} from {', '.join(origins)} held back, the first: {message}")
        lines = [line for line in self.output.splitlines() if line.strip()]
        if lines:
            parts.append(f"{len(lines)} line{'s' * (len(lines) != 1)} of library output held back")
        return f" ({'; '.join(parts)}; --debug shows them)" if parts else ""


@contextlib.contextmanager
def _descriptor_redirected(fd: int, target: int):
    """Point descriptor `fd` at `target` (C libraries write there directly); restore it afterwards."""
    try:
        sys.stderr.flush()
        saved = os.dup(fd)
    except (OSError, ValueError, AttributeError):  # no descriptor 2 (a closed stderr): nothing to hold
        yield
        return
    os.dup2(target, fd)
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.__stderr__.flush()
        os.dup2(saved, fd)
        os.close(saved)


def _origin(filename: str) -> str:
    """The library a warning comes from: the folder under site-packages, else the file's name."""
    parts = Path(filename or "?").parts
    for k, part in enumerate(parts[:-1]):
        if part in ("site-packages", "dist-packages"):
            return parts[k + 1].removesuffix(".py")
    return Path(filename or "?").stem or "?"


def _clean(text: str) -> str:
    """First line, control characters escaped."""
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in line)
