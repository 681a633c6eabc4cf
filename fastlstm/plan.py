"""How this host runs a spec: the kernel target (ISA, vector width), the tuning, and the packed weights
with one named record per layer-direction (kernels/layout.py) that the kernels read by field.

Packing writes each block's slab straight into one 64-byte aligned buffer, a block at a time, so loading
a model never holds a second full copy of its weights: a file's tensors are memory-mapped views that are
read once and released (release_source) as soon as their blocks are packed.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass

import numpy as np

from . import tuning
from .kernels.activations import ACTIVATION_CODES
from .kernels.layout import ALIGN, CELL_FLOATS, FIELDS, LAYER, RECORDS, records_floats
from .kernels.target import LANES, TARGET, Target
from .plan_layers import layer_sizes, pack_layers
from .quantized import QuantizedMatrix
from .spec import ModelSpec

G = 4 * LANES


@dataclass(frozen=True)
class Plan:
    """The packed model and how to run it on this host (immutable, shared by every stream).

    wbuf     (N,) float32, read-only, 64-byte aligned: the LAYER records, then every packed array (layout.py;
             slabs of int8 / fp16 / bf16 weights are stored as such, in wbuf's bytes)
    layers   (L*D,) layout.LAYER records, read-only: a view of the front of wbuf
    variant  an empty marker array whose type tells the kernels what to compile (entry.py): dtype float32,
             int8, uint16 (bf16) or int16 (fp16) for the stored weights; ndim 1, + 1 when some cell needs the
             general path (other activations, clip, peepholes, input_forget), + 2 for a whole model (layers
             around the LSTM, plan_layers.py)
    weights  "fp32", "fp16", "bf16" or "int8" (of the LSTM's W and R; the layers around it are fp32)
    step_floats  a whole model's step scratch per stream in the state buffer (layout.W_STEP_FLOATS), else 0
    """

    target: Target
    wbuf: np.ndarray
    layers: np.ndarray
    variant: np.ndarray
    weights: str
    step_floats: int = 0

    @property
    def blocks(self) -> int:
        return int(self.layers[0]["blocks"])

    @property
    def padded_hidden(self) -> int:
        return self.blocks * LANES


def blocks_of(n: int, per_block: int) -> int:
    return -(-n // per_block)


def build_plan(spec: ModelSpec, release_source=None) -> Plan:
    """Pack `spec` for this host. release_source(array), when given, is called on each source tensor once
    its values are packed (format.py drops the memory-mapped pages from the process's memory)."""
    H, Hout = spec.hidden_size, spec.output_size
    nblk, pblk = blocks_of(H, LANES), blocks_of(Hout, G)
    has_proj = spec.proj_size > 0
    count = spec.num_layers * spec.num_directions
    storage = np.dtype(STORAGE[spec.weights])
    sizes = []  # floats of every packed array, in packing order
    for l, layer in enumerate(spec.layers):
        I = spec.layer_input_size(l)
        for ds in layer:
            sizes += [-(-nblk * K * G * storage.itemsize // 4) for K in (I, Hout)]
            sizes += [nblk * G, nblk * G] if spec.weights == "int8" else []
            sizes += [nblk * G, CELL_FLOATS]
            sizes += [3 * H] if ds.peephole is not None else []
            sizes += [pblk * H * G, pblk * G] if has_proj else []
    sizes += layer_sizes(spec)
    head = records_floats(count)
    wbuf = _aligned_empty(head + sum(_aligned(n) for n in sizes))
    wbuf[:head] = 0.0
    wbuf[:2].view(np.int64)[0] = count
    records = wbuf[RECORDS : RECORDS + 2 * FIELDS * count].view(LAYER)  # the kernels' table, inside wbuf
    cursor = _Cursor(wbuf, head)
    for l, layer in enumerate(spec.layers):
        I = spec.layer_input_size(l)
        for d, ds in enumerate(layer):
            rec = records[l * spec.num_directions + d]
            rec["w_slabs"] = cursor.slabs(_stored(ds.W), H, I, release_source)
            rec["r_slabs"] = cursor.slabs(_stored(ds.R), H, Hout, release_source)
            if spec.weights == "int8":  # the row scales, in the packed gate order (zeros pad the last block)
                rec["w_scales"] = cursor.put(_packed_rows(ds.W.scale, H))
                rec["r_scales"] = cursor.put(_packed_rows(ds.R.scale, H))
            else:
                rec["w_scales"] = rec["r_scales"] = -1
            rec["bias"] = cursor.put(_packed_rows(ds.b, H))
            rec["cell"] = cursor.put(_cell_floats(ds.options))
            rec["peephole"] = cursor.put(ds.peephole) if ds.peephole is not None else -1
            if has_proj:
                rec["proj_slabs"] = cursor.dense_slabs(ds.proj, release_source)
                rec["proj_zero"] = cursor.put(np.zeros(pblk * G, np.float32))
            else:
                rec["proj_slabs"] = rec["proj_zero"] = -1
            rec["input_size"], rec["hidden"], rec["output"], rec["blocks"] = I, H, Hout, nblk
            rec["proj_blocks"] = pblk if has_proj else 0
            rec["f_code"], rec["g_code"], rec["h_code"] = (ACTIVATION_CODES[a] for a in ds.options.activations)
            rec["input_forget"] = int(ds.options.input_forget)
            rec["default_cell"] = int(ds.options.is_default and ds.peephole is None)
            rec["reverse"] = int(bool(ds.reverse))
            rec["directions"] = spec.num_directions
            rec["panel_rows"] = tuning.panel_rows(max(I, Hout))
            rec["step_chunk"] = tuning.STEP_CHUNK
    step_floats = pack_layers(spec, cursor, wbuf[:RECORDS].view(np.int64), release_source)
    wbuf.flags.writeable = False
    records = wbuf[RECORDS : RECORDS + 2 * FIELDS * count].view(LAYER)  # read-only now, like wbuf
    ndim = (1 if records["default_cell"].all() else 2) + (2 if spec.pre or spec.post else 0)
    return Plan(TARGET, wbuf, records, np.empty((0,) * ndim, STORAGE[spec.weights]), spec.weights, step_floats)


class _Cursor:
    """Appends packed arrays to wbuf, each on a cache line; returns their offsets (floats)."""

    def __init__(self, wbuf: np.ndarray, start: int):
        self.wbuf, self.at = wbuf, start

    def _take(self, n: int) -> tuple[int, np.ndarray]:
        offset = self.at
        self.at += _aligned(n)
        self.wbuf[offset + n : self.at] = 0.0
        return offset, self.wbuf[offset : offset + n]

    def put(self, array) -> int:
        array = np.asarray(array, np.float32).ravel()
        offset, dst = self._take(array.size)
        dst[:] = array
        return offset

    def slabs(self, matrix, H: int, K: int, release_source) -> int:
        """(4H, K) canonical gate rows -> (nblk, K, G) k-major slabs, a block at a time: block b's lane
        gate*LANES + u holds canonical row gate*H + b*LANES + u (zero rows pad the last block). The slabs
        keep the matrix's dtype (float32, or the stored bits of int8 / fp16 / bf16); the offset returned
        counts elements of that dtype."""
        nblk = blocks_of(H, LANES)
        itemsize = matrix.dtype.itemsize
        offset, flat = self._take(-(-nblk * K * G * itemsize // 4))
        dst = flat.view(matrix.dtype)[: nblk * K * G].reshape(nblk, K, G)
        for b in range(nblk):
            units = min(LANES, H - b * LANES)
            for gate in range(4):
                rows = matrix[gate * H + b * LANES : gate * H + b * LANES + units]  # (units, K)
                dst[b, :, gate * LANES : gate * LANES + units] = rows.T
                dst[b, :, gate * LANES + units : (gate + 1) * LANES] = 0.0
                if release_source is not None:  # a block at a time: the load never holds a tensor's pages
                    release_source(rows)
        return offset * 4 // itemsize

    def dense_slabs(self, matrix, release_source) -> int:
        """(N, K) dense rows -> (ceil(N/G), K, G) k-major slabs of G outputs (zero columns pad the last)."""
        N, K = matrix.shape
        nblk = blocks_of(N, G)
        offset, flat = self._take(nblk * K * G)
        dst = flat.reshape(nblk, K, G)
        for b in range(nblk):
            n = min(G, N - b * G)
            dst[b, :, :n] = matrix[b * G : b * G + n].T
            dst[b, :, n:] = 0.0
            if release_source is not None:
                release_source(matrix[b * G : b * G + n])
        return offset


# How each weight type is stored in the slabs, and the dtype of the kernels' variant marker that names it.
STORAGE = {"fp32": np.float32, "int8": np.int8, "bf16": np.uint16, "fp16": np.int16}


def _stored(matrix) -> np.ndarray:
    """The array whose elements go into the slabs: float32 weights, or a QuantizedMatrix's stored values
    (int8 as they are, fp16 and bf16 as their 16-bit patterns)."""
    if isinstance(matrix, QuantizedMatrix):
        return matrix.data.view(np.int16) if matrix.kind == "fp16" else matrix.data
    return matrix


def _packed_rows(vector: np.ndarray, H: int) -> np.ndarray:
    """(4H,) canonical -> (nblk * G,) packed gate order (zeros pad the last block)."""
    nblk = blocks_of(H, LANES)
    out = np.zeros(nblk * G, np.float32)
    unit = np.arange(H)
    blk, u = np.divmod(unit, LANES)
    for gate in range(4):
        out[blk * G + gate * LANES + u] = vector[gate * H : (gate + 1) * H]
    return out


def unpack_rows(packed: np.ndarray, H: int) -> np.ndarray:
    """Inverse of the packed gate order for a vector (tests use the round trip)."""
    blk, u = np.divmod(np.arange(H), LANES)
    return np.concatenate([packed[blk * G + gate * LANES + u] for gate in range(4)])


def _cell_floats(options) -> np.ndarray:
    clip = np.inf if options.clip is None else options.clip
    return np.array([*options.alphas, *options.betas, clip], np.float32)


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


HUGE_PAGE = 2 << 20
HUGE_FROM = 256 << 10  # bytes of weights from which wbuf goes on transparent huge pages


def _aligned_empty(n: int) -> np.ndarray:
    """(n,) float32 starting on a 64-byte boundary (so packed slabs start on cache lines). From HUGE_FROM
    bytes on, the buffer is an anonymous mapping on 2 MiB-aligned transparent huge pages (Linux, THP in
    'madvise' or 'always' mode): weights that stream from L2 / L3 every step then sit in physically
    contiguous memory, which spreads them evenly over the cache sets (with 4 KiB pages the L2 conflict
    misses of a model depend on where the kernel put each page: step H=128 on Zen 3 varied 10-15 us between
    two allocations of the same weights) and needs one TLB entry per 2 MiB."""
    nbytes = 4 * n
    if nbytes >= HUGE_FROM and hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            mapping = mmap.mmap(-1, nbytes + HUGE_PAGE)
            raw = np.frombuffer(mapping, np.uint8)
            start = -raw.ctypes.data % HUGE_PAGE
            mapping.madvise(mmap.MADV_HUGEPAGE, start, nbytes - nbytes % HUGE_PAGE or HUGE_PAGE)
            return raw[start : start + nbytes].view(np.float32)
        except (OSError, ValueError):
            pass  # no huge pages here: the plain allocation below
    raw = np.empty(n + ALIGN, np.float32)
    start = (-raw.ctypes.data % 64) // 4
    return raw[start : start + n]
