"""@njit kernels only (no Python objects cross them): SIMD vectors, register tiles, the cache-blocked GEMM,
the fused cell, the run and step drivers, the thread team and the one entry point (entry.py).

Importing the package installs fastlstm's numba cache locator (cache.py) before any kernel is decorated.
"""

from .cache import install as _install_cache_locator

_install_cache_locator()
