"""Where numba caches fastlstm's compiled kernels: a per-user directory, never site-packages.

numba's default puts the cache in `__pycache__` next to the sources. Inside site-packages that outlives
an uninstall (pip removes only the files it installed) and the leftover directory then shadows a later
editable install as a namespace package. It also keys each cached function on its own file only, so a
kernel whose callee changed in another file would load stale machine code. This locator:

- puts every fastlstm kernel in  $NUMBA_CACHE_DIR/fastlstm, else $FASTLSTM_CACHE_DIR, else
  $XDG_CACHE_HOME/fastlstm or ~/.cache/fastlstm (a temporary directory if none is writable);
- names the directory after the package version and a hash of every kernel source file, and uses that
  hash as each function's source stamp: any change to any kernel invalidates all of them.

numba still keys each entry on the CPU name and features it compiled for, so one directory serves
several CPUs. `fastlstm warmup` fills it ahead of time (for a deployment image).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from numba.core import caching

_KERNELS = Path(__file__).resolve().parent
_PACKAGE = _KERNELS.parent


def _sources_hash() -> str:
    """sha256 over the package version and every kernel source (sorted by name)."""
    digest = hashlib.sha256()
    digest.update(_version().encode())
    for path in sorted(_KERNELS.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _version() -> str:
    try:
        text = (_PACKAGE / "__init__.py").read_text()
        return next(line.split("=")[1].strip().strip("\"'") for line in text.splitlines()
                    if line.startswith("__version__"))
    except (OSError, StopIteration, IndexError):
        return "unknown"


def base_directory() -> Path:
    """The cache root: NUMBA_CACHE_DIR/fastlstm, FASTLSTM_CACHE_DIR, XDG_CACHE_HOME/fastlstm or ~/.cache/fastlstm."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"]) / "fastlstm"
    if os.environ.get("FASTLSTM_CACHE_DIR"):
        return Path(os.environ["FASTLSTM_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "fastlstm"


SOURCES_HASH = _sources_hash()


def cache_directory() -> Path:
    """This source state's directory (created on first use)."""
    return base_directory() / f"kernels-{_version()}-{SOURCES_HASH[:16]}"


# numba's locator interface: _CacheLocator in every release; the implementation class holding the list of
# locators is CacheImpl since 0.61 and _CacheImpl before.
_CacheImpl = getattr(caching, "CacheImpl", None) or caching._CacheImpl


class KernelCacheLocator(caching._CacheLocator):
    """numba cache locator for functions defined in fastlstm/kernels (see the module docstring)."""

    def __init__(self, py_func, path: Path):
        self._lineno = py_func.__code__.co_firstlineno
        self._path = path

    def get_cache_path(self):
        return str(self._path)

    def get_source_stamp(self):
        return SOURCES_HASH

    def get_disambiguator(self):
        return str(self._lineno)

    @classmethod
    def from_function(cls, py_func, py_file):
        try:
            if Path(py_file).resolve().parent != _KERNELS:
                return None
        except OSError:
            return None
        for path in (cache_directory(), Path(tempfile.gettempdir()) / f"fastlstm-{_uid()}" / cache_directory().name):
            locator = cls(py_func, path)
            try:
                locator.ensure_cache_path()
            except OSError:
                continue
            return locator
        return None


def _uid() -> str:
    return str(os.getuid()) if hasattr(os, "getuid") else "user"


def install() -> None:
    """Put the locator first in numba's list (before its own; it answers only for fastlstm's kernels).
    Must run before the kernel modules are imported: numba picks a function's locator when decorating it."""
    if KernelCacheLocator not in _CacheImpl._locator_classes:
        _CacheImpl._locator_classes.insert(0, KernelCacheLocator)
