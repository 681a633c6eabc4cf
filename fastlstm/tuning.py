"""Every tuning choice of the kernels in one place, each with the measurement that set it.

Register tiles are chosen by the instruction set (kernels/tiles.py: 6+4-row tiles on AVX-512, 2-row
tiles on AVX2); the numbers below are runtime parameters of the plan records (kernels/layout.LAYER), so
they can follow the host's cache sizes without recompiling (and change no result: only the order in which
independent sums are computed).
"""

from __future__ import annotations

import functools
import os

# Cache sizes per core (bytes) when sysfs does not say: a conservative modern x86 core.
DEFAULT_L1D, DEFAULT_L2 = 32 << 10, 512 << 10

# The GEMM's k blocking is the summation piece, config.K_PIECE = 128: a numerical constant, not a tuning
# choice (the piece (128 x 4*LANES floats, 16 KiB on AVX2, 32 KiB on AVX-512) stays in L1 while the tiles of
# a panel use it; 128 measured 5-10% faster than 96 or 192 on Sapphire Rapids with 6-row tiles).

# Rows per panel: their input rows (K floats each) stay in L2 while every block passes over them. A
# multiple of every tile height (6, 4, 2). The panel's inputs should take at most half the L2.
PANEL_ROWS_MAX = 252

# Blocks per unit of step()'s sweep: a unit projects its blocks (W) and then steps them (R), so W and R of
# a block are read together. 2, 4 and whole-layer measured alike at H <= 128 (Sapphire Rapids).
STEP_CHUNK = 2


@functools.cache
def cache_sizes() -> tuple[int, int]:
    """(L1 data, L2) bytes per core of CPU 0, from sysfs (Linux), else the defaults."""
    l1d, l2 = DEFAULT_L1D, DEFAULT_L2
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in os.listdir(base):
            if not entry.startswith("index"):
                continue
            path = os.path.join(base, entry)
            with open(os.path.join(path, "level")) as f:
                level = int(f.read())
            with open(os.path.join(path, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(path, "size")) as f:
                size = _parse_size(f.read().strip())
            if level == 1 and kind in ("Data", "Unified"):
                l1d = size
            elif level == 2 and kind in ("Data", "Unified"):
                l2 = size
    except (OSError, ValueError):
        pass
    return l1d, l2


def _parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text and text[-1].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text)


def panel_rows(K: int) -> int:
    """Rows per panel for inputs of K floats: as many as half the L2 holds, a multiple of 12 (every tile
    height divides it), between 12 and PANEL_ROWS_MAX."""
    _, l2 = cache_sizes()
    rows = (l2 // 2) // (4 * max(K, 1))
    return max(12, min(PANEL_ROWS_MAX, rows - rows % 12))


# When a team of threads pays: work per phase in FMAs (B * 4H * (I + Hout) per step layer, B * 4H * Hout per
# recurrence step of run). Measured per host by calibration.py; these are used only with
# FASTLSTM_CALIBRATION=off (and on one core).
TEAM_MIN_STEP_WORK = 4 * 160 * 320
TEAM_MIN_RUN_WORK = 4 * 192 * 192
