"""Where everything lives: the per-layer-direction plan record, the packed weight layout, and the one
state buffer (h, c and step scratch) with its offsets. Pure arithmetic (register_jitable: plain Python when
called from Python, compiled into the kernels that call it).

Packed weights (built by fastlstm/plan.py, read by the kernels; offsets count float32 elements of wbuf,
which starts with the LAYER records, see RECORDS):
a block is LANES hidden units, nblk = ceil(H / LANES), Hp = nblk * LANES, G = 4 * LANES gate rows per
block [i(LANES) f(LANES) g(LANES) o(LANES)]: gate row j = gate*LANES + u of block blk is canonical row
gate*H + blk*LANES + u.

    W slabs   (nblk, I, G)     k-major: slab blk, row k = the block's G gate weights of input k, stored as
                               the model's weight type (fp32, int8, fp16 or bf16: simd.wpointer)
    R slabs   (nblk, Hout, G)  same; a thread's range of blocks is one contiguous slice of R
    scales    (nblk * G,)      int8 only: each gate row's scale, packed like the bias (W and R each)
    bias      (nblk * G,)      pre-summed, packed gate order
    proj      (pblk, H, G)     the projection (Hout, H) as slabs of G outputs, pblk = ceil(Hout / G)
    peephole  (3, H)           p_i, p_f, p_o (general cell only)
    cell      (CELL_FLOATS,)   alphas (3), betas (3), clip (inf = none) of the general cell
"""

import numpy as np
from numba import types
from numba.core.errors import TypingError
from numba.extending import intrinsic, register_jitable
from numba.np.arrayobj import make_array, populate_array
from numba.np.numpy_support import from_dtype

from .target import LANES

G = 4 * LANES
CELL_FLOATS = 7
ALIGN = 64 // 4  # floats: every packed array starts on a cache line

# One record per layer-direction (row l*D + d of the plan's table), fields by name in the kernels.
LAYER = np.dtype([
    ("input_size", np.int64),    # I: inputs of this layer (K of W)
    ("hidden", np.int64),        # H
    ("output", np.int64),        # Hout (= proj_size, or H)
    ("blocks", np.int64),        # nblk = ceil(H / LANES)
    ("w_slabs", np.int64),       # offset of W's slabs in wbuf, in elements of the stored weight type
    ("r_slabs", np.int64),       # offset of R's slabs, likewise
    ("w_scales", np.int64),      # int8 weights: offset (floats) of W's per-row scales, packed like the bias
    ("r_scales", np.int64),      # likewise for R; -1 for the other weight types
    ("bias", np.int64),          # offset of the packed bias
    ("proj_slabs", np.int64),    # offset of the projection's slabs, -1 without a projection
    ("proj_blocks", np.int64),   # pblk
    ("proj_zero", np.int64),     # offset of pblk * G zeros: the projection's chains start from 0
    ("peephole", np.int64),      # offset of (3, H) peepholes, -1 without
    ("cell", np.int64),          # offset of the general cell's floats
    ("f_code", np.int64),        # ONNX activation codes (activations.ACTIVATION_CODES) of f, g, h
    ("g_code", np.int64),
    ("h_code", np.int64),
    ("input_forget", np.int64),  # 1: f = 1 - i (ONNX input_forget)
    ("default_cell", np.int64),  # 1: sigmoid/tanh/tanh, no clip/peephole/input_forget: the fused cell
    ("reverse", np.int64),       # 1: runs from the last valid step to the first
    ("directions", np.int64),    # D of the model (every record of a model holds the same)
    ("panel_rows", np.int64),    # tuning: input rows per panel (their inputs stay in L2)
    ("step_chunk", np.int64),    # tuning: blocks per unit of step's sweep (W then R of the same blocks)
])


FIELDS = len(LAYER.names)
assert all(LAYER.fields[name][0] == np.int64 for name in LAYER.names) and LAYER.itemsize == 8 * FIELDS
_LAYER_ARRAY = types.Array(from_dtype(LAYER), 1, "C", readonly=True)
# wbuf begins with the plan's records: float 0..1 hold the record count (an int64), the records start at
# RECORDS (a cache line in), and every packed array follows them. One array then carries the whole model
# across numba's dispatcher (each array argument costs ~50 ns per call, a record array argument ~1 us).
RECORDS = ALIGN
# The rest of that first cache line: int64 words (word k = floats 2k, 2k+1) describing the layers around the
# LSTM of a whole model (kernels/layers.py; all 0 for a bare LSTM, whose kernels never read them).
W_LAYER_TABLE = 1  # float offset of the layer table: (W_PRE + W_POST) rows of layers.COLUMNS int64 words
W_PRE = 2          # layers before the LSTM (table rows 0..): an Embedding first for a token model
W_POST = 3         # layers after it that step() runs per step (the head; a SelectLast is run()'s, not here)
W_WIDE = 4         # floats per row of the layers' work buffers (the widest output, whole blocks of G)
W_BUFFERS = 5      # work buffers per row (1, or 2 when a stack has two layers or more: they alternate)
W_STEP_FLOATS = 6  # state scratch floats per stream of a whole model's step (kernels/model.py)


def records_floats(count: int) -> int:
    """Floats of wbuf before the first packed array: header line + count records, cache-line aligned."""
    return RECORDS + -(-2 * FIELDS * count // ALIGN) * ALIGN


@intrinsic
def as_layers(typingctx, wbuf):
    """The (n,) LAYER records at the front of wbuf (a read-only view; see RECORDS)."""
    if not (isinstance(wbuf, types.Array) and wbuf.dtype == types.float32 and wbuf.ndim == 1
            and wbuf.layout == "C"):
        raise TypingError(f"as_layers: expected the packed float32 weights, got {wbuf}")

    def codegen(context, builder, sig, args):
        src = make_array(sig.args[0])(context, builder, args[0])
        out = make_array(_LAYER_ARRAY)(context, builder)
        count = builder.load(builder.bitcast(src.data, context.get_value_type(types.intp).as_pointer()))
        first = builder.gep(src.data, [context.get_constant(types.intp, RECORDS)], inbounds=True)
        data = builder.bitcast(first, context.get_data_type(_LAYER_ARRAY.dtype).as_pointer())
        itemsize = context.get_constant(types.intp, LAYER.itemsize)
        populate_array(out, data=data, shape=[count], strides=[itemsize], itemsize=itemsize, meminfo=src.meminfo)
        context.nrt.incref(builder, sig.args[0], args[0])  # the view holds a reference to wbuf
        return out._getvalue()

    return _LAYER_ARRAY(wbuf), codegen


@register_jitable
def padded_hidden(H):
    """Hp: H rounded up to whole blocks."""
    return -(-H // LANES) * LANES


@register_jitable
def out_stride(H, Hout, has_proj):
    """Floats per row of a layer's new-h buffer: Hp without a projection (the cell writes whole blocks),
    whole projection blocks with one."""
    return -(-Hout // G) * G if has_proj else padded_hidden(H)


# The state buffer of B streams of a stack of L layers x D directions, one float32 array:
#   h        (L, D, B, Hout)                              the public State.h (a view)
#   c        (L, D, B, H)                                 the public State.c (a view)
#   hc       (L, B, Hp)      step scratch: o * h(c) of the step being computed, per layer
#   hnew     (L, B, S)       step scratch: each layer's new h (S = out_stride; = hc's rows without proj)
#   gates    (B, 4Hp)        step scratch: gate sums, stored only for the general cell
#   tables   (2B + 2) int64  step scratch: rows 0..B-1, their gate offsets, the sweep counter (2 floats each)
#   layers   (B, X)          whole models only (X = plan word W_STEP_FLOATS): the layers' step scratch
#   shape    (5,) int64      the last 10 floats: L, D, B, H, Hout, written when the State is made; the
#                            kernels refuse a buffer whose shape is not their model's
# h and c hold state between calls; the scratch holds nothing between calls (copies ignore it).
SHAPE_WORDS = 5


@register_jitable
def state_sizes(L, D, B, H, Hout, has_proj):
    """(h floats, c floats, total floats) of a state buffer (total is even: the shape words are aligned)."""
    n_h, n_c = L * D * B * Hout, L * D * B * H
    Hp, S = padded_hidden(H), out_stride(H, Hout, has_proj)
    scratch = L * B * Hp + L * B * S + B * 4 * Hp + 2 * (2 * B + 2)
    total = n_h + n_c + scratch + ALIGN + 2 * SHAPE_WORDS  # ALIGN: the int64 tables start 8-byte aligned
    return n_h, n_c, total + total % 2


@register_jitable
def layer_scratch_at(L, D, B, H, Hout, has_proj):
    """Offset (even) of a whole model's step scratch in a state buffer: after the int64 tables. A State made
    for a whole model is longer by B * (its W_STEP_FLOATS) floats, all before the shape words (state_sizes
    leaves the room: the scratch of every other part is at the same offset whatever the extra)."""
    return scratch_offsets(L, D, B, H, Hout, has_proj)[3] + 2 * (2 * B + 2)


@register_jitable
def scratch_offsets(L, D, B, H, Hout, has_proj):
    """Offsets of hc, hnew, gates and the int64 tables (as a float offset, even) in a state buffer."""
    n_h, n_c, _ = state_sizes(L, D, B, H, Hout, has_proj)
    Hp, S = padded_hidden(H), out_stride(H, Hout, has_proj)
    hc = n_h + n_c
    hnew = hc + L * B * Hp
    gates = hnew + L * B * S
    tables = gates + B * 4 * Hp
    return hc, hnew, gates, tables + tables % 2
