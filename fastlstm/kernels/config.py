"""Compilation flags shared by every kernel (one place, so all kernels agree)."""

# Fast-math without 'nnan'/'ninf': LLVM may reassociate and contract (vectorised dot products, FMA)
# but must keep NaN/Inf semantics, so NaN inputs propagate instead of being optimised away.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
# ENTRY: the one function Python calls (entry.kernel). JIT: every function only kernels call: numba
# generates no Python wrapper for them (its code generation is part of first-use compile time).
ENTRY = dict(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy", boundscheck=False)
JIT = dict(ENTRY, no_cpython_wrapper=True, no_cfunc_wrapper=True)

# The largest k_chunk a plan may choose (tuning.py): the GEMM keeps a dequantized slab piece of that many rows
# on its stack (128 x 64 floats = 32 KiB on AVX-512).
K_CHUNK_MAX = 128
