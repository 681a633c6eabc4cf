"""A float32 vector type for numba kernels: explicit SIMD through LLVM vector values, LANES wide.

Why: numba cannot keep an array-based accumulator (`acc[j] += w[k, j] * h[k]`) in registers, and its
auto-vectoriser picks its own width. A `FVec` value is an LLVM `<LANES x float>` SSA value, so a loop of
`vfma` calls keeps its running sums in registers and sums in exactly the order written: every kernel that
uses the same call sequence gets bit-identical results. LANES comes from the host plan (target.py): 16 on
AVX-512 (one zmm), 8 elsewhere (one ymm on AVX2; two xmm halves on SSE-only CPUs).

Memory access is through raw pointers (`fptr(array)`, for a C-contiguous float32 array of any rank) and
flat element indices (callers compute row offsets). Pointers, not arrays, cross the calls between kernels
on purpose: every array passed to or bound inside a numba function costs an atomic reference-count
increment and decrement, which in the per-block code cost more than the arithmetic. `vload`/`vstore` are
unaligned LANES-wide accesses, `vload_n`/`vstore_n` touch only the first n lanes (masked: the tail block of
a hidden size that is not a multiple of LANES). Nothing is bounds-checked: the drivers derive every offset
from the validated plan and state shapes.

The arithmetic intrinsics carry no fast-math flags: results do not depend on the optimiser.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic, models, register_model

from .target import LANES, TARGET

_F32 = ir.FloatType()
_I32 = ir.IntType(32)
_VEC = ir.VectorType(_F32, LANES)
_IVEC = ir.VectorType(_I32, LANES)


class FVecType(types.Type):
    def __init__(self):
        super().__init__(name=f"F32x{LANES}")


FVec = FVecType()


@register_model(FVecType)
class _FVecModel(models.PrimitiveModel):
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
    """<LANES x i1>: lane j is on when j < n."""
    count = context.cast(builder, n, nty, types.int32)
    return builder.icmp_signed("<", ir.Constant(_IVEC, list(range(LANES))), _splat(builder, count, _IVEC))


@intrinsic
def vload(typingctx, ptr, idx):
    """ptr[idx : idx + LANES] as a vector."""
    _check_pointer(ptr)

    def codegen(context, builder, sig, args):
        ptr = _address(context, builder, args[0], sig.args[1], args[1])
        return builder.load(builder.bitcast(ptr, _VEC.as_pointer()), align=4)

    return FVec(ptr, idx), codegen


@intrinsic
def vstore(typingctx, ptr, idx, vec):
    """ptr[idx : idx + LANES] = vec."""
    _check_pointer(ptr)

    def codegen(context, builder, sig, args):
        ptr = _address(context, builder, args[0], sig.args[1], args[1])
        builder.store(args[2], builder.bitcast(ptr, _VEC.as_pointer()), align=4)
        return context.get_dummy_value()

    return types.void(ptr, idx, FVec), codegen


@intrinsic
def vload_n(typingctx, ptr, idx, n):
    """ptr[idx : idx + n] in the first n lanes (0 <= n <= LANES), zeros in the rest; reads nothing
    past element idx + n - 1."""
    _check_pointer(ptr)

    def codegen(context, builder, sig, args):
        ptr = _address(context, builder, args[0], sig.args[1], args[1])
        mask = _lane_mask(context, builder, sig.args[2], args[2])
        fnty = ir.FunctionType(_VEC, [ptr.type, _I32, mask.type, _VEC])
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.load.v{LANES}f32.p0")
        return builder.call(fn, [ptr, ir.Constant(_I32, 4), mask, ir.Constant(_VEC, [0.0] * LANES)])

    return FVec(ptr, idx, n), codegen


@intrinsic
def vstore_n(typingctx, ptr, idx, vec, n):
    """ptr[idx : idx + n] = the first n lanes of vec; writes nothing else."""
    _check_pointer(ptr)

    def codegen(context, builder, sig, args):
        ptr = _address(context, builder, args[0], sig.args[1], args[1])
        mask = _lane_mask(context, builder, sig.args[3], args[3])
        fnty = ir.FunctionType(ir.VoidType(), [_VEC, ptr.type, _I32, mask.type])
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.store.v{LANES}f32.p0")
        builder.call(fn, [args[2], ptr, ir.Constant(_I32, 4), mask])
        return context.get_dummy_value()

    return types.void(ptr, idx, FVec, n), codegen


@intrinsic
def vsplat(typingctx, scalar):
    """A vector with every lane = float32(scalar)."""
    if not isinstance(scalar, (types.Float, types.Integer)):
        raise TypingError(f"vsplat: expected a number, got {scalar}")

    def codegen(context, builder, sig, args):
        return _splat(builder, context.cast(builder, args[0], sig.args[0], types.float32), _VEC)

    return FVec(scalar), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    """a * b + c with one rounding (llvm.fma)."""

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VEC, [_VEC] * 3),
                                            f"llvm.fma.v{LANES}f32")
        return builder.call(fn, args)

    return FVec(FVec, FVec, FVec), codegen


def _binary(op):
    """An elementwise IEEE operation (no fast-math flags: results do not depend on the optimiser)."""

    @intrinsic
    def vector_op(typingctx, a, b):
        def codegen(context, builder, sig, args):
            return getattr(builder, op)(args[0], args[1])

        return FVec(FVec, FVec), codegen

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

    return FVec(FVec, FVec, FVec), codegen


@intrinsic
def ptr_to_int(typingctx, ptr):
    """A pointer as an int64 (to publish it in the team's control block)."""
    if not isinstance(ptr, types.CPointer):
        raise TypingError(f"ptr_to_int: expected a pointer, got {ptr}")

    def codegen(context, builder, sig, args):
        return builder.ptrtoint(args[0], ir.IntType(64))

    return types.int64(ptr), codegen


def _int_to(ptrtype):
    @intrinsic
    def int_to_ptr(typingctx, value):
        def codegen(context, builder, sig, args):
            return builder.inttoptr(args[0], context.get_value_type(ptrtype))

        return ptrtype(types.int64), codegen

    return int_to_ptr


IntPtr = types.CPointer(types.int64)
int_to_fptr = _int_to(FloatPtr)
int_to_iptr = _int_to(IntPtr)


@intrinsic
def iptr(typingctx, arr):
    """The int64 pointer to element 0 of a C-contiguous int64 array."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64 and arr.layout == "C"):
        raise TypingError(f"iptr: expected a C-contiguous int64 array, got {arr}")
    return IntPtr(arr), _data_pointer


@intrinsic
def ints_at(typingctx, ptr, idx):
    """An int64 pointer to the 8 bytes at float index idx (even) of a float32 pointer: int64 tables kept in
    a float32 buffer (the state's step scratch)."""
    _check_pointer(ptr)

    def codegen(context, builder, sig, args):
        ptr = _address(context, builder, args[0], sig.args[1], args[1])
        return builder.bitcast(ptr, ir.IntType(64).as_pointer())

    return IntPtr(ptr, idx), codegen


@intrinsic
def keep(typingctx, arr):
    """A use of `arr` the optimiser keeps: numba frees an array after its last use, and a raw pointer taken
    from it (fptr, iptr) is not one. Call keep(arr) after the last use of such a pointer."""

    def codegen(context, builder, sig, args):
        return context.get_dummy_value()

    return types.void(arr), codegen


# ---- weights below float32, widened to FVec in registers (issue: reduced-precision weights) -----------------
# A weight pointer's element type says how its values are stored (plan.py packs them; the tiles read them
# through wload, which the compiler specialises by that type: an fp32 model compiles none of this).
#   float32*  fp32        int8*  int8 (its per-row scale applied per piece of k: gemm.add_scaled)
#   uint16*   bf16 bits   int16* fp16 bits (numba has no float16 on the CPU; the bits are widened here)
Int8Ptr = types.CPointer(types.int8)
Bf16Ptr = types.CPointer(types.uint16)
Fp16Ptr = types.CPointer(types.int16)
_WEIGHT_POINTERS = {types.float32: FloatPtr, types.int8: Int8Ptr, types.uint16: Bf16Ptr, types.int16: Fp16Ptr}
_I16VEC, _I8VEC = ir.VectorType(ir.IntType(16), LANES), ir.VectorType(ir.IntType(8), LANES)


@intrinsic
def wpointer(typingctx, wbuf, variant):
    """wbuf's data as a pointer to the weight type the variant marker's dtype names (see above)."""
    ptrtype = _WEIGHT_POINTERS.get(getattr(variant, "dtype", None))
    if ptrtype is None or not isinstance(wbuf, types.Array):
        raise TypingError(f"wpointer: no weight type for the marker {variant}")

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        return builder.bitcast(data, context.get_value_type(ptrtype))

    return ptrtype(wbuf, variant), codegen


def _widen(context, builder, ptrtype, ptr):
    """The LANES weights at ptr (already offset) as <LANES x float>, exactly (every stored value is a float32)."""
    if ptrtype == FloatPtr:
        return builder.load(builder.bitcast(ptr, _VEC.as_pointer()), align=4)
    if ptrtype == Int8Ptr:
        q = builder.load(builder.bitcast(ptr, _I8VEC.as_pointer()), align=1)
        return builder.sitofp(builder.sext(q, _IVEC), _VEC)
    bits = builder.zext(builder.load(builder.bitcast(ptr, _I16VEC.as_pointer()), align=2), _IVEC)
    if ptrtype == Bf16Ptr:  # bf16 is the upper half of a float32
        return builder.bitcast(builder.shl(bits, _splat(builder, ir.Constant(_I32, 16), _IVEC)), _VEC)
    if TARGET.f16c:  # one vcvtph2ps
        half = builder.bitcast(builder.trunc(bits, _I16VEC), ir.VectorType(ir.HalfType(), LANES))
        return builder.fpext(half, _VEC)
    # fp16 -> fp32 in integer arithmetic (no F16C): |h| << 13 as a float32, times 2^112, rebases the exponent
    # exactly for normal and subnormal values (weights are finite: plan.py refuses inf/NaN); then the sign.
    const = lambda value: _splat(builder, ir.Constant(_I32, value), _IVEC)  # noqa: E731
    magnitude = builder.bitcast(builder.shl(builder.and_(bits, const(0x7FFF)), const(13)), _VEC)
    scaled = builder.fmul(magnitude, _splat(builder, ir.Constant(_F32, 2.0**112), _VEC))
    sign = builder.shl(builder.and_(bits, const(0x8000)), const(16))
    return builder.bitcast(builder.or_(builder.bitcast(scaled, _IVEC), sign), _VEC)


@intrinsic
def wload(typingctx, ptr, idx):
    """ptr[idx : idx + LANES] widened to float32, for any weight pointer type."""
    if ptr not in _WEIGHT_POINTERS.values():
        raise TypingError(f"wload: expected a weight pointer, got {ptr}")

    def codegen(context, builder, sig, args):
        return _widen(context, builder, sig.args[0], _address(context, builder, args[0], sig.args[1], args[1]))

    return FVec(ptr, idx), codegen


@intrinsic
def is_scaled(typingctx, ptr):
    """True (a compile-time constant) for int8 weight pointers: they carry per-row scales."""

    def codegen(context, builder, sig, args):
        return ir.Constant(ir.IntType(1), int(sig.args[0] == Int8Ptr))

    return types.boolean(ptr), codegen


@intrinsic
def stack_floats(typingctx, count):
    """A float32 pointer to `count` (a compile-time constant) floats on the calling function's stack, 64-byte
    aligned: scratch that costs no allocation (valid until the function returns)."""
    if not isinstance(count, types.IntegerLiteral):
        raise TypingError(f"stack_floats: the size must be a constant, got {count}")
    n = count.literal_value

    def codegen(context, builder, sig, args):
        slot = cgutils.alloca_once(builder, ir.ArrayType(_F32, n))
        slot.align = 64
        return builder.bitcast(slot, _F32.as_pointer())

    return FloatPtr(count), codegen


# Elementwise helpers for the activations (activations.py), written on _VEC / _IVEC / LANES so they
# follow the vector width. vadd/vsub are FMA calls: a call is never given fast-math flags (the kernels
# compile without any, config.py, but a caller that sets them cannot re-associate these); LLVM folds
# fma(a, 1, b) back to a plain fadd.


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

        return FVec(FVec, FVec), codegen

    return vector_op


vadd = _fma_with(1.0, False)  # a + b, one rounding, never re-associated
vsub = _fma_with(-1.0, True)  # a - b: fma(b, -1, a)


@intrinsic
def vabs(typingctx, x):
    """|x| per lane (clears the sign bit; NaN stays NaN)."""

    def codegen(context, builder, sig, args):
        return _lane_intrinsic(builder, "fabs", args)

    return FVec(FVec), codegen


@intrinsic
def vcopysign(typingctx, mag, sign):
    """|mag| with the sign bit of `sign`, per lane (NaN lanes stay NaN; -0 keeps its sign)."""

    def codegen(context, builder, sig, args):
        return _lane_intrinsic(builder, "copysign", args)

    return FVec(FVec, FVec), codegen


@intrinsic
def vorsign(typingctx, mag, sign):
    """mag with the sign bit of `sign` OR-ed in: copysign in two operations when every lane of mag is
    +0, positive or NaN (a NaN stays NaN)."""

    def codegen(context, builder, sig, args):
        mag_bits, sign_bits = (builder.bitcast(v, _IVEC) for v in args)
        sign_only = builder.and_(sign_bits, ir.Constant(_IVEC, [-(2**31)] * LANES))
        return builder.bitcast(builder.or_(mag_bits, sign_only), _VEC)

    return FVec(FVec, FVec), codegen


@intrinsic
def vmax(typingctx, x, lo):
    """max(x, lo) per lane with the NaN lanes of x passed through (lo must not be NaN): lo where x < lo
    (ordered compare), else x. One vmaxps on x86."""

    def codegen(context, builder, sig, args):
        x, lo = args
        return builder.select(builder.fcmp_ordered("<", x, lo), lo, x)

    return FVec(FVec, FVec), codegen


@intrinsic
def vselect_lt(typingctx, a, b, when_less, otherwise):
    """Per lane: `when_less` where a < b (ordered: a NaN compares false), else `otherwise`."""

    def codegen(context, builder, sig, args):
        a, b, when_less, otherwise = args
        return builder.select(builder.fcmp_ordered("<", a, b), when_less, otherwise)

    return FVec(FVec, FVec, FVec, FVec), codegen


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

    return FVec(FVec), codegen
