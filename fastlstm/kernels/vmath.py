"""Horizontal operations and lane masks on FVec vectors for the layer kernels (kernels/layers.py), in the
style of simd.py: LLVM vector intrinsics named from LANES, no fast-math flags (one fixed sequence of IEEE
operations, so every caller gets the same bits). The elementwise operations (vadd, vsub, vmax, ...) are
simd.py's; the exponential is activations.exp_nonpositive.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .simd import FloatPtr, FVec
from .target import LANES

_F32 = ir.FloatType()
_I32 = ir.IntType(32)
_VEC = ir.VectorType(_F32, LANES)
_IVEC = ir.VectorType(_I32, LANES)


@intrinsic
def vreduce_add(typingctx, start, a):
    """start + a[0] + a[1] + ... + a[LANES-1], added in lane order (llvm.vector.reduce.fadd without the
    reassoc flag is sequential): the same bits on every CPU. Reductions longer than a vector chain calls
    (layers.py's row sums go 16 values at a time whatever LANES is, so both plans agree)."""

    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(_F32, [_F32, _VEC])
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.vector.reduce.fadd.v{LANES}f32")
        return builder.call(fn, [context.cast(builder, args[0], sig.args[0], types.float32), args[1]])

    return types.float32(start, FVec), codegen


@intrinsic
def vhmax(typingctx, a):
    """The largest lane (llvm.vector.reduce.fmax: NaN lanes are ignored unless every lane is NaN; the
    maximum of exact values is exact, so the order does not matter)."""

    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(_F32, [_VEC])
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.vector.reduce.fmax.v{LANES}f32")
        return builder.call(fn, args)

    return types.float32(FVec), codegen


@intrinsic
def vfirst(typingctx, a, n):
    """The first n lanes of a, +0.0 in the others (n <= 0: none, n >= LANES: all)."""
    if not isinstance(n, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        count = context.cast(builder, args[1], sig.args[1], types.int32)
        splat = builder.insert_element(ir.Constant(_IVEC, ir.Undefined), count, ir.Constant(_I32, 0))
        splat = builder.shuffle_vector(splat, splat, ir.Constant(_IVEC, [0] * LANES))
        keep = builder.icmp_signed("<", ir.Constant(_IVEC, list(range(LANES))), splat)
        return builder.select(keep, args[0], ir.Constant(_VEC, [0.0] * LANES))

    return FVec(FVec, n), codegen


@intrinsic
def padd(typingctx, ptr, off):
    """The float32 pointer `off` elements past ptr: a row inside a buffer, as a pointer the kernels pass on."""
    if ptr != FloatPtr or not isinstance(off, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return builder.gep(args[0], [context.cast(builder, args[1], sig.args[1], types.intp)], inbounds=True)

    return FloatPtr(ptr, off), codegen
