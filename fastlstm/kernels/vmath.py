"""More F32x16 operations for the layer kernels (kernels/layers.py): add, sub, max, horizontal reductions,
lane masks, pointer offsets and a float32 exp, in the style of simd.py (LLVM vector values, no fast-math
flags: one fixed sequence of IEEE operations, so every caller computes bit-identical results).

vexp is Cephes' expf: x = n ln2 + r with n = round(x / ln2) and |r| <= ln2/2, e^r by a degree-6
polynomial, times 2^n built in the exponent bits. Max relative error ~2 ulp (1.2e-7) on [-87.3, 88];
inputs are clamped to that range first (e^-87.3 = 1.2e-38 stands in for anything smaller, which no
softmax sum can notice), NaN lanes stay NaN.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

from .simd import LANES, F32x16, FloatPtr, vclamp, vfma, vmul, vsplat

_F32 = ir.FloatType()
_I32 = ir.IntType(32)
_VEC = ir.VectorType(_F32, LANES)
_IVEC = ir.VectorType(_I32, LANES)


def _binary(op):
    @intrinsic
    def vector_op(typingctx, a, b):
        def codegen(context, builder, sig, args):
            return getattr(builder, op)(args[0], args[1])

        return F32x16(F32x16, F32x16), codegen

    return vector_op


vadd = _binary("fadd")
vsub = _binary("fsub")


def _unary_intrinsic(name):
    @intrinsic
    def vector_fn(typingctx, a):
        def codegen(context, builder, sig, args):
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VEC, [_VEC]), name)
            return builder.call(fn, args)

        return F32x16(F32x16), codegen

    return vector_fn


vfloor = _unary_intrinsic("llvm.floor.v16f32")


@intrinsic
def vmax(typingctx, a, b):
    """Lane-wise maximum (llvm.maxnum: a NaN lane takes the other operand)."""

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VEC, [_VEC, _VEC]),
                                            "llvm.maxnum.v16f32")
        return builder.call(fn, args)

    return F32x16(F32x16, F32x16), codegen


@intrinsic
def vpow2(typingctx, n):
    """2**n per lane for integer-valued n in [-126, 127] (built in the exponent bits)."""

    def codegen(context, builder, sig, args):
        ints = builder.fptosi(args[0], _IVEC)
        biased = builder.add(ints, ir.Constant(_IVEC, [127] * LANES))
        bits = builder.shl(biased, ir.Constant(_IVEC, [23] * LANES))
        return builder.bitcast(bits, _VEC)

    return F32x16(F32x16), codegen


@intrinsic
def vsum(typingctx, a):
    """The sum of the 16 lanes, in lane order (an ordered reduction: the same bits on every CPU)."""

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_F32, [_F32, _VEC]),
                                            "llvm.vector.reduce.fadd.v16f32")
        return builder.call(fn, [ir.Constant(_F32, -0.0), args[0]])

    return types.float32(F32x16), codegen


@intrinsic
def vhmax(typingctx, a):
    """The largest of the 16 lanes (NaN lanes ignored unless all are NaN)."""

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_F32, [_VEC]),
                                            "llvm.vector.reduce.fmax.v16f32")
        return builder.call(fn, args)

    return types.float32(F32x16), codegen


_EXP_HI, _EXP_LO = np.float32(88.0), np.float32(-87.3)  # 2^n stays a normal float: n in [-126, 127]
_LOG2E = np.float32(1.44269504088896341)
_LN2_HI, _LN2_LO = np.float32(0.693359375), np.float32(-2.12194440e-4)
_E0, _E1, _E2 = np.float32(1.9875691500e-4), np.float32(1.3981999507e-3), np.float32(8.3334519073e-3)
_E3, _E4, _E5 = np.float32(4.1665795894e-2), np.float32(1.6666665459e-1), np.float32(5.0000001201e-1)


@njit(inline="always")
def vexp(x):
    """e**x of 16 lanes (see the module docstring)."""
    x = vclamp(x, vsplat(_EXP_LO), vsplat(_EXP_HI))
    n = vfloor(vfma(x, vsplat(_LOG2E), vsplat(np.float32(0.5))))
    r = vfma(n, vsplat(-_LN2_HI), x)
    r = vfma(n, vsplat(-_LN2_LO), r)
    p = vfma(vsplat(_E0), r, vsplat(_E1))
    p = vfma(p, r, vsplat(_E2))
    p = vfma(p, r, vsplat(_E3))
    p = vfma(p, r, vsplat(_E4))
    p = vfma(p, r, vsplat(_E5))
    p = vfma(p, vmul(r, r), vadd(r, vsplat(np.float32(1.0))))
    return vmul(p, vpow2(n))


@intrinsic
def vfirst(typingctx, a, n):
    """The first n lanes of a (0 <= n <= 16), zeros in the others."""

    def codegen(context, builder, sig, args):
        count = context.cast(builder, args[1], sig.args[1], types.int32)
        splat = builder.insert_element(ir.Constant(_IVEC, ir.Undefined), count, ir.Constant(_I32, 0))
        splat = builder.shuffle_vector(splat, splat, ir.Constant(_IVEC, [0] * LANES))
        keep = builder.icmp_signed("<", ir.Constant(_IVEC, list(range(LANES))), splat)
        return builder.select(keep, args[0], ir.Constant(_VEC, [0.0] * LANES))

    return F32x16(F32x16, n), codegen


@intrinsic
def padd(typingctx, ptr, off):
    """The float32 pointer `off` elements past ptr (a sub-array of a buffer, without a numba array object)."""
    if ptr != FloatPtr:
        raise TypingError(f"padd: expected a float32 pointer (fptr(array)), got {ptr}")

    def codegen(context, builder, sig, args):
        return builder.gep(args[0], [context.cast(builder, args[1], sig.args[1], types.intp)], inbounds=True)

    return FloatPtr(ptr, off), codegen
