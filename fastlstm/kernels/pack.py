"""Weight packing: a whole model -> one flat float32 buffer + an int64 table of offsets.

Per layer-direction, with BLOCK hidden units per block, Hp = H padded to whole blocks, nblk = Hp/BLOCK
and G = 4*BLOCK gate rows per block. Inside a block the gate rows are [i(BLOCK) f(BLOCK) g(BLOCK)
o(BLOCK)]: gate row  j = gate*BLOCK + u  of block blk is canonical row  gate*H + blk*BLOCK + u.
Packed row  blk*G + j  is the packed gate index (zero weights pad the last block).

    Wp   (nblk, I, G)     W as k-major slabs: slab blk, row k = the block's 64 gate weights of input
                          k (four F32x16 vectors: the kernels broadcast x[k] and FMA whole rows)
    Rp   (nblk, Hout, G)  R, same slabs; a thread's range of blocks is one contiguous slice of R (it
                          stays in that core's L2 across time steps)
    b    (4Hp,)           pre-summed bias, packed gate index
    peep (3, H)           peepholes p_i, p_f, p_o (only when present)
    proj (Hout, H)        projection (only when present)
    cellf (CELLF,)        float params of the general cell: alphas (3), betas (3), clip (inf = none)

Everything the kernels need for one layer-direction is one row of `meta` (the M_* columns), so a
whole stacked model crosses the numba dispatcher as two arrays.
"""

import numpy as np

from ..quantized import as_float32
from .activations import ACTIVATION_CODES

BLOCK = 16  # hidden units per block = the lanes of one F32x16 vector
G = 4 * BLOCK  # gate rows per block: four vectors [i f g o]

# meta columns (one row per layer-direction, row l*D + d)
(M_WP, M_RP, M_B, M_PEEP, M_PROJ, M_CELLF, M_I, M_H, M_HOUT, M_NBLK,
 M_FCODE, M_GCODE, M_HCODE, M_INPUT_FORGET, M_FAST, M_REVERSE) = range(16)
META_COLUMNS = 16
CELLF = 7
ALIGN = 16  # floats: every array starts on a 64-byte boundary (relative to the buffer start)


def padded_units(hidden_size: int, block: int = BLOCK) -> int:
    """Hp: hidden units rounded up to whole blocks."""
    return -(-hidden_size // block) * block


def packed_index(hidden_size: int, block: int = BLOCK) -> np.ndarray:
    """(4H,) packed gate index of every canonical row (gate*H + unit)."""
    H = hidden_size
    gate, unit = np.divmod(np.arange(4 * H), H)
    blk, u = np.divmod(unit, block)
    return blk * 4 * block + gate * block + u


def pack_rows(matrix: np.ndarray, H: int) -> np.ndarray:
    """(4H, K) or (4H,) canonical -> (4Hp, K) or (4Hp,) packed rows (zero rows pad the last block)."""
    out = np.zeros((4 * padded_units(H), *matrix.shape[1:]), np.float32)
    out[packed_index(H)] = matrix
    return out


def unpack_rows(packed: np.ndarray, H: int) -> np.ndarray:
    """Inverse of pack_rows (tests use the round trip)."""
    return np.ascontiguousarray(packed[packed_index(H)])


def pack_slabs(matrix: np.ndarray, H: int) -> np.ndarray:
    """(4H, K) canonical -> (nblk, K, G): each block's packed rows, transposed to k-major."""
    rows = pack_rows(matrix, H)  # (4Hp, K)
    return np.ascontiguousarray(rows.reshape(-1, G, rows.shape[1]).transpose(0, 2, 1))


def cell_floats(options) -> np.ndarray:
    clip = np.inf if options.clip is None else options.clip
    return np.array([*options.alphas, *options.betas, clip], np.float32)


def pack_model(spec):
    """spec -> (wbuf (N,) float32 read-only, meta (L*D, META_COLUMNS) int64 read-only)."""
    H, Hout = spec.hidden_size, spec.output_size
    pieces, rows, size = [], [], 0

    def put(array) -> int:
        nonlocal size
        array = np.ascontiguousarray(array, np.float32).ravel()
        offset = size
        pad = -array.size % ALIGN
        pieces.append(array)
        if pad:
            pieces.append(np.zeros(pad, np.float32))
        size += array.size + pad
        return offset

    for l, layer in enumerate(spec.layers):
        for ds in layer:
            row = np.zeros(META_COLUMNS, np.int64)
            # quantized W/R (fastlstm.quantized): dequantized to float32 here until kernels read them as stored
            row[M_WP] = put(pack_slabs(as_float32(ds.W), H))
            row[M_RP] = put(pack_slabs(as_float32(ds.R), H))
            row[M_B] = put(pack_rows(ds.b, H))
            row[M_PEEP] = -1 if ds.peephole is None else put(ds.peephole)
            row[M_PROJ] = -1 if ds.proj is None else put(ds.proj)
            row[M_CELLF] = put(cell_floats(ds.options))
            row[M_I], row[M_H], row[M_HOUT] = spec.layer_input_size(l), H, Hout
            row[M_NBLK] = padded_units(H) // BLOCK
            row[M_FCODE], row[M_GCODE], row[M_HCODE] = (ACTIVATION_CODES[a] for a in ds.options.activations)
            row[M_INPUT_FORGET] = int(ds.options.input_forget)
            row[M_FAST] = int(ds.options.is_default and ds.peephole is None)
            row[M_REVERSE] = int(bool(ds.reverse))
            rows.append(row)
    wbuf = _aligned_empty(size)
    if pieces:
        np.concatenate(pieces, out=wbuf)
    meta = np.stack(rows)
    wbuf.flags.writeable = False
    meta.flags.writeable = False
    return wbuf, meta


def _aligned_empty(n: int) -> np.ndarray:
    """(n,) float32 starting on a 64-byte boundary (so packed slabs start on cache lines)."""
    raw = np.empty(n + ALIGN, np.float32)
    start = (-raw.ctypes.data % 64) // 4
    return raw[start : start + n]
