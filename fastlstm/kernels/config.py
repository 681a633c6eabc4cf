"""Compilation flags shared by every kernel (one place, so all kernels agree)."""

# No fast-math: every kernel spells out its vector arithmetic (simd.py), so the flags bought nothing, and
# numba's fast-math pass put them on every float instruction, the intrinsics' included: LLVM could then
# re-associate, contract or replace a division by a reciprocal differently where a function was inlined,
# and two paths meant to agree bit for bit (run and step) might not. Plain IEEE everywhere; also for the
# general cell's float64 math (approximate functions would cost accuracy there).
FASTMATH = False
# ENTRY: the one function Python calls (entry.kernel), cached. JIT: every function only kernels call: numba
# generates no Python wrapper for them, and does not cache them on their own. Each cached function would be
# turned into machine code with every callee linked into it (gates_add again and again up the call tree):
# first-use compile 14.3 -> ~10 s (Zen 3). The entry's cache holds all of them.
ENTRY = dict(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy", boundscheck=False)
JIT = dict(ENTRY, cache=False, no_cpython_wrapper=True, no_cfunc_wrapper=True)

# The largest k_chunk a plan may choose (tuning.py): the GEMM keeps a dequantized slab piece of that many rows
# on its stack (128 x 64 floats = 32 KiB on AVX-512).
K_CHUNK_MAX = 128
