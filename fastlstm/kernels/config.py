"""Compilation flags shared by every kernel (one place, so all kernels agree)."""

# Fast-math without 'nnan'/'ninf': LLVM may reassociate and contract (vectorised dot products, FMA)
# but must keep NaN/Inf semantics, so NaN inputs propagate instead of being optimised away.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
JIT = dict(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy", boundscheck=False)
JIT_PARALLEL = dict(JIT, parallel=True)
