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

# The summation contract (tiles.py): every gate element's sum over k is a chain of pieces of K_PIECE inputs,
# each piece an FMA chain started from 0 and added once to the running value (the bias or the stored
# partial). A chain that starts from the bias rounds all K products at the bias's magnitude; per-piece
# chains round at the small partial sum's: 2-3.7x closer to a float64 run on long sequences (issue 16's
# measurement, tools/sum_order.py). The piece is also the cache block of the GEMM (its slab rows stay in L1,
# 16 KiB on AVX2 and 32 KiB on AVX-512) and the size of the dequantized piece on the GEMM's stack. A constant:
# results may not depend on the host.
K_PIECE = 128
