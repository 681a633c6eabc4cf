"""Random canonical specs for engine tests (built directly, no converter involved)."""

from __future__ import annotations

import numpy as np

from fastlstm.spec import CellOptions, DirectionSpec, ModelSpec


def random_spec(input_size=7, hidden_size=12, num_layers=1, num_directions=1, proj_size=0, *,
                peephole=False, options=None, reverse=False, seed=0, scale=0.4) -> ModelSpec:
    """A validated spec with N(0, scale) weights. reverse applies to one-direction layers."""
    rng = np.random.default_rng(seed)
    H, Hout = hidden_size, proj_size or hidden_size
    layers = []
    for l in range(num_layers):
        I = input_size if l == 0 else num_directions * Hout
        layer = []
        for d in range(num_directions):
            layer.append(DirectionSpec(
                W=rng.normal(0, scale, (4 * H, I)),
                R=rng.normal(0, scale, (4 * H, Hout)),
                b=rng.normal(0, scale, 4 * H),
                peephole=rng.normal(0, scale, (3, H)) if peephole else None,
                proj=rng.normal(0, scale, (Hout, H)) if proj_size else None,
                options=options or CellOptions(),
                reverse=bool(d) if num_directions == 2 else reverse,
            ))
        layers.append(layer)
    return ModelSpec(input_size, H, num_layers, num_directions, proj_size, layers).validate()


def rel_error(ours, ref) -> float:
    """max |ours - ref| / max(max |ref|, 1): the project's accuracy measure."""
    ref = np.asarray(ref, np.float64)
    return float(np.max(np.abs(np.asarray(ours, np.float64) - ref)) / max(np.max(np.abs(ref)), 1.0))
