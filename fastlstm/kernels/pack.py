"""Weight packing: canonical gate-major rows -> gate-interleaved blocks of hidden units.

Canonical rows are [i(0..H) | f(0..H) | g(0..H) | o(0..H)]. Packed rows put the 4 gates of a block of
BLOCK units next to each other: packed row  blk*4*BLOCK + gate*BLOCK + u  holds canonical row
gate*H + blk*BLOCK + u (zero rows pad the last block). One block of packed rows therefore yields
i, f, g, o for BLOCK units, so the cell update runs while those rows are still in cache.
"""

import numpy as np


def padded_units(hidden_size: int, block: int) -> int:
    """Hp: hidden units rounded up to whole blocks."""
    return -(-hidden_size // block) * block


def pack_rows(matrix: np.ndarray, hidden_size: int, block: int) -> np.ndarray:
    """matrix (4H, K) or (4H,) canonical -> (4*Hp, K) or (4*Hp,) packed, C-contiguous float32."""
    H, Hp = hidden_size, padded_units(hidden_size, block)
    tail = matrix.shape[1:]
    source = matrix.reshape(4, H, *tail)  # (gate, unit, K)
    padded = np.zeros((4, Hp, *tail), dtype=np.float32)
    padded[:, :H] = source
    # (gate, blk, u, K) -> (blk, gate, u, K)
    blocked = padded.reshape(4, Hp // block, block, *tail).swapaxes(0, 1)
    return np.ascontiguousarray(blocked.reshape(4 * Hp, *tail))
