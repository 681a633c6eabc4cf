"""The first kernel call of a process without numba's registry refresh, when the kernel is in the cache.

numba refreshes its target context before it even looks in the cache: it imports and installs every
registry of its own (NumPy, random, linalg, which imports SciPy when it is installed), 0.2-0.6 s of a
process's cold start, spent even when the kernel then comes ready-made from the cache. The cached machine
code needs none of it, only numba's runtime (NRT), so the first refresh of a process is replaced by the
runtime's initialisation alone. It is a one-shot: the original method is put back at once, and a cache
miss then compiles as usual (numba's compiler refreshes the context again before it types anything).
"""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def light_first_refresh():
    """Within the block, the next refresh of numba's CPU target context only initialises the runtime."""
    try:
        from numba.core.registry import cpu_target
        from numba.core.runtime import rtsys

        context = cpu_target.target_context
        original = context.refresh
    except (ImportError, AttributeError):  # another numba: the plain first call
        yield
        return

    def runtime_only():
        context.refresh = original  # one shot
        rtsys.initialize(context)

    context.refresh = runtime_only
    try:
        yield
    finally:
        if context.__dict__.get("refresh") is runtime_only:
            del context.refresh  # unused: back to the class's method
        elif context.__dict__.get("refresh") is original:
            del context.refresh
