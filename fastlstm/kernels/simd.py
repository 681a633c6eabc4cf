"""A 16-lane float32 vector type for numba kernels: explicit SIMD through LLVM vector values.

Why: numba cannot keep an array-based accumulator (`acc[j] += w[k, j] * h[k]`) in registers, and its
auto-vectoriser picks 256-bit code on this CPU. An `F32x16` value is an LLVM `<16 x float>` SSA
value, so a loop of `vfma` calls keeps its running sums in (512-bit, with AVX-512) registers and sums
in exactly the order written: every kernel that uses the same call sequence gets bit-identical
results. On CPUs without AVX-512, LLVM splits each value into two 256-bit (or four 128-bit) halves.

Memory access is through a raw float32 pointer (`fptr(array)`, for a C-contiguous float32 array of
any rank) and a flat element index (callers compute row offsets). Pointers, not arrays, cross the
calls between kernels on purpose: every array passed to or bound inside a numba function costs an
atomic reference-count increment and decrement, which in the per-block code cost more than the
arithmetic. `vload`/`vstore` are unaligned 16-lane accesses, `vload_n`/`vstore_n` touch only the
first n lanes (masked: the tail block of a hidden size that is not a multiple of 16). Nothing is
bounds-checked: the drivers derive every offset from the validated packed table and state shapes.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic, models, register_model

LANES = 16
_F32 = ir.FloatType()
_I32 = ir.IntType(32)
_VEC = ir.VectorType(_F32, LANES)
_IVEC = ir.VectorType(_I32, LANES)


class F32x16Type(types.Type):
    def __init__(self):
        super().__init__(name="F32x16")


F32x16 = F32x16Type()


@register_model(F32x16Type)
class _F32x16Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VEC)


FloatPtr = types.CPointer(types.float32)


def _check_pointer(ptr):
    if ptr != FloatPtr:
        raise TypingError(f"simd: expected a float32 pointer (fptr(array)), got {ptr}")


def _address(context, builder, ptr, idxty, idx):
    """Pointer to element `idx` of a float32 pointer."""
    return builder.gep(ptr, [context.cast(builder, idx, idxty, types.intp)], inbounds=True)


@intrinsic
def fptr(typingctx, arr):
    """The float32 pointer to element 0 of a C-contiguous float32 array (any rank). The array must
    outlive every use of the pointer (the caller's reference keeps it alive)."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.float32 and arr.layout == "C"):
        raise TypingError(f"fptr: expected a C-contiguous float32 array, got {arr}")
    return FloatPtr(arr), _data_pointer


@intrinsic
def fptr_strided(typingctx, arr):
    """fptr for a float32 array of any layout (a strided view): the caller indexes it by its strides."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.float32):
        raise TypingError(f"fptr_strided: expected a float32 array, got {arr}")
    return FloatPtr(arr), _data_pointer


def _data_pointer(context, builder, sig, args):
    return context.make_array(sig.args[0])(context, builder, args[0]).data


def _splat(builder, scalar, vecty):
    vec = builder.insert_element(ir.Constant(vecty, ir.Undefined), scalar, ir.Constant(_I32, 0))
    return builder.shuffle_vector(vec, vec, ir.Constant(_IVEC, [0] * LANES))


def _lane_mask(context, builder, nty, n):
    """<16 x i1>: lane j is on when j < n."""
    count = context.cast(builder, n, nty, types.int32)
    return builder.icmp_signed("<", ir.Constant(_IVEC, list(range(LANES))), _splat(builder, count, _IVEC))


@intrinsic
def vload(typingctx, ptr, idx):
    """ptr[idx : idx + 16] as a vector."""
    _check_pointer(ptr)

    def codegen(context, builder, sig, args):
        ptr = _address(context, builder, args[0], sig.args[1], args[1])
        return builder.load(builder.bitcast(ptr, _VEC.as_pointer()), align=4)

    return F32x16(ptr, idx), codegen


@intrinsic
def vstore(typingctx, ptr, idx, vec):
    """ptr[idx : idx + 16] = vec."""
    _check_pointer(ptr)

    def codegen(context, builder, sig, args):
        ptr = _address(context, builder, args[0], sig.args[1], args[1])
        builder.store(args[2], builder.bitcast(ptr, _VEC.as_pointer()), align=4)
        return context.get_dummy_value()

    return types.void(ptr, idx, F32x16), codegen


@intrinsic
def vload_n(typingctx, ptr, idx, n):
    """ptr[idx : idx + n] in the first n lanes (0 <= n <= 16), zeros in the rest; reads nothing
    past element idx + n - 1."""
    _check_pointer(ptr)

    def codegen(context, builder, sig, args):
        ptr = _address(context, builder, args[0], sig.args[1], args[1])
        mask = _lane_mask(context, builder, sig.args[2], args[2])
        fnty = ir.FunctionType(_VEC, [ptr.type, _I32, mask.type, _VEC])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.masked.load.v16f32.p0")
        return builder.call(fn, [ptr, ir.Constant(_I32, 4), mask, ir.Constant(_VEC, [0.0] * LANES)])

    return F32x16(ptr, idx, n), codegen


@intrinsic
def vstore_n(typingctx, ptr, idx, vec, n):
    """ptr[idx : idx + n] = the first n lanes of vec; writes nothing else."""
    _check_pointer(ptr)

    def codegen(context, builder, sig, args):
        ptr = _address(context, builder, args[0], sig.args[1], args[1])
        mask = _lane_mask(context, builder, sig.args[3], args[3])
        fnty = ir.FunctionType(ir.VoidType(), [_VEC, ptr.type, _I32, mask.type])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.masked.store.v16f32.p0")
        builder.call(fn, [args[2], ptr, ir.Constant(_I32, 4), mask])
        return context.get_dummy_value()

    return types.void(ptr, idx, F32x16, n), codegen


@intrinsic
def vsplat(typingctx, scalar):
    """A vector with every lane = float32(scalar)."""
    if not isinstance(scalar, (types.Float, types.Integer)):
        raise TypingError(f"vsplat: expected a number, got {scalar}")

    def codegen(context, builder, sig, args):
        return _splat(builder, context.cast(builder, args[0], sig.args[0], types.float32), _VEC)

    return F32x16(scalar), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    """a * b + c with one rounding (llvm.fma)."""

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VEC, [_VEC] * 3), "llvm.fma.v16f32")
        return builder.call(fn, args)

    return F32x16(F32x16, F32x16, F32x16), codegen


def _binary(op):
    """An elementwise IEEE operation (no fast-math flags: results do not depend on the optimiser)."""

    @intrinsic
    def vector_op(typingctx, a, b):
        def codegen(context, builder, sig, args):
            return getattr(builder, op)(args[0], args[1])

        return F32x16(F32x16, F32x16), codegen

    return vector_op


vmul = _binary("fmul")
vdiv = _binary("fdiv")


@intrinsic
def vclamp(typingctx, x, lo, hi):
    """min(max(x, lo), hi) per lane, with NaN lanes passed through unchanged (select on ordered
    compares: a NaN is neither below lo nor above hi)."""

    def codegen(context, builder, sig, args):
        x, lo, hi = args
        below = builder.fcmp_ordered("<", x, lo)
        above = builder.fcmp_ordered(">", x, hi)
        return builder.select(below, lo, builder.select(above, hi, x))

    return F32x16(F32x16, F32x16, F32x16), codegen


# Elementwise helpers for the activations (activations.py), written on _VEC / _IVEC / LANES so they
# follow the vector width. Why vadd/vsub are FMA calls: numba's fastmath pass (the kernels compile with
# JIT's fastmath flags) adds reassoc/arcp/... to every scalar-typed fadd/fsub/fmul/fdiv it finds in a
# kernel, which would let LLVM re-associate the activations' carefully ordered arithmetic. A call to a
# vector intrinsic is never flagged; LLVM folds fma(a, 1, b) back to a plain (unflagged) fadd.


def _lane_intrinsic(builder, name, args):
    """Call the LLVM vector intrinsic `llvm.NAME.vLANESf32` on `args` (all _VEC)."""
    fnty = ir.FunctionType(_VEC, [_VEC] * len(args))
    fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.{name}.v{LANES}f32")
    return builder.call(fn, args)


def _fma_with(coefficient, swap):
    """a + b (coefficient 1) or a - b (coefficient -1) as one correctly rounded fma(b or a, +-1, ...)."""

    @intrinsic
    def vector_op(typingctx, a, b):
        def codegen(context, builder, sig, args):
            a, b = args
            one = ir.Constant(_VEC, [coefficient] * LANES)
            return _lane_intrinsic(builder, "fma", [b, one, a] if swap else [a, one, b])

        return F32x16(F32x16, F32x16), codegen

    return vector_op


vadd = _fma_with(1.0, False)  # a + b, one rounding, never re-associated
vsub = _fma_with(-1.0, True)  # a - b: fma(b, -1, a)


@intrinsic
def vabs(typingctx, x):
    """|x| per lane (clears the sign bit; NaN stays NaN)."""

    def codegen(context, builder, sig, args):
        return _lane_intrinsic(builder, "fabs", args)

    return F32x16(F32x16), codegen


@intrinsic
def vcopysign(typingctx, mag, sign):
    """|mag| with the sign bit of `sign`, per lane (NaN lanes stay NaN; -0 keeps its sign)."""

    def codegen(context, builder, sig, args):
        return _lane_intrinsic(builder, "copysign", args)

    return F32x16(F32x16, F32x16), codegen


@intrinsic
def vorsign(typingctx, mag, sign):
    """mag with the sign bit of `sign` OR-ed in: copysign in two operations when every lane of mag is
    +0, positive or NaN (a NaN stays NaN)."""

    def codegen(context, builder, sig, args):
        mag_bits, sign_bits = (builder.bitcast(v, _IVEC) for v in args)
        sign_only = builder.and_(sign_bits, ir.Constant(_IVEC, [-(2**31)] * LANES))
        return builder.bitcast(builder.or_(mag_bits, sign_only), _VEC)

    return F32x16(F32x16, F32x16), codegen


@intrinsic
def vmax(typingctx, x, lo):
    """max(x, lo) per lane with the NaN lanes of x passed through (lo must not be NaN): lo where x < lo
    (ordered compare), else x. One vmaxps on x86."""

    def codegen(context, builder, sig, args):
        x, lo = args
        return builder.select(builder.fcmp_ordered("<", x, lo), lo, x)

    return F32x16(F32x16, F32x16), codegen


@intrinsic
def vselect_lt(typingctx, a, b, when_less, otherwise):
    """Per lane: `when_less` where a < b (ordered: a NaN compares false), else `otherwise`."""

    def codegen(context, builder, sig, args):
        a, b, when_less, otherwise = args
        return builder.select(builder.fcmp_ordered("<", a, b), when_less, otherwise)

    return F32x16(F32x16, F32x16, F32x16, F32x16), codegen


@intrinsic
def vpow2_low_bits(typingctx, k):
    """2^(m - 127) per lane, for k = 1.5 * 2^23 + m as float32 with an integer m in 0..254: what
    fma(y, log2(e), 1.5 * 2^23 + bias) leaves (m = round(y log2(e)) + bias in the low mantissa bits).
    k's bit pattern shifted left by 23 puts m in the exponent field; m = 0 gives +0.0. The caller
    keeps m in range (a negative m would come out as -inf or garbage)."""

    def codegen(context, builder, sig, args):
        bits = builder.bitcast(args[0], _IVEC)
        shifted = builder.shl(bits, ir.Constant(_IVEC, [23] * LANES))
        return builder.bitcast(shifted, _VEC)

    return F32x16(F32x16), codegen
