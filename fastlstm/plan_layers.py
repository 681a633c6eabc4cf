"""A whole model's layers in the plan: the layer table and arrays packed into wbuf after the LSTM's, and the
header words that tell the kernels where they are (kernels/layout.W_*, kernels/layers.py's table).

The table holds the layers before the LSTM (spec.pre), then the head: spec.post without a leading
SelectLast (run() selects the rows in Python before the head; step()'s rows are already one per stream).
Arrays: an embedding table as it is (V, E); a Linear as dense slabs of G outputs (plan.dense_slabs, the
projection's layout) and its bias padded to whole blocks (zeros when it has none: gates_add's chains start
from it); a LayerNorm's weight, bias and eps.
"""

from __future__ import annotations

import numpy as np

from . import tuning
from .kernels.layers import (
    ACTIVATION_CODES,
    C_ACT,
    C_B,
    C_BLOCKS,
    C_EPS,
    C_IN,
    C_KIND,
    C_OUT,
    C_PANEL,
    C_W,
    COLUMNS,
    K_ACTIVATION,
    K_EMBEDDING,
    K_LAYER_NORM,
    K_LINEAR,
)
from .kernels.layout import W_BUFFERS, W_LAYER_TABLE, W_POST, W_PRE, W_STEP_FLOATS, W_WIDE
from .kernels.target import LANES
from .layers import Activation, Embedding, LayerNorm, Linear, SelectLast

G = 4 * LANES


def table_layers(spec) -> list:
    """The layers of the kernels' table, in order: pre, then the head (post without a leading SelectLast)."""
    head = spec.post[1:] if spec.post and isinstance(spec.post[0], SelectLast) else spec.post
    return [*spec.pre, *head]


def _blocks(n: int) -> int:
    return -(-n // G)


def layer_sizes(spec) -> list[int]:
    """Floats of every array pack_layers appends to wbuf, in its order (plan.py sizes wbuf with them)."""
    layers = table_layers(spec)
    if not layers:
        return []
    sizes = [2 * COLUMNS * len(layers)]  # the table: int64 words
    for layer in layers:
        if isinstance(layer, Embedding):
            sizes.append(layer.table.size)
        elif isinstance(layer, Linear):
            sizes += [_blocks(layer.out_features) * layer.in_features * G, _blocks(layer.out_features) * G]
        elif isinstance(layer, LayerNorm):
            sizes += [layer.in_features, layer.in_features, 1]
    return sizes


def step_scratch(spec, n_pre: int, wide: int, buffers: int) -> int:
    """Floats per stream of the whole-model step's scratch (kernels/model.py): three int64 tables, the LSTM's
    input row when layers come before it, the work buffers; even, so every stream keeps int64 alignment."""
    floats = 6 + (spec.input_size if n_pre else 0) + buffers * wide
    return floats + floats % 2


def pack_layers(spec, cursor, header_words: np.ndarray, release_source=None) -> int:
    """Append the layer table and arrays to wbuf through plan._Cursor and fill the header words (an int64
    view of wbuf's first cache line); returns the step scratch floats per stream (0 for a bare LSTM)."""
    layers = table_layers(spec)
    if not layers:
        return 0
    table_at = cursor.put(np.zeros(2 * COLUMNS * len(layers), np.float32))
    table = cursor.wbuf[table_at : table_at + 2 * COLUMNS * len(layers)].view(np.int64).reshape(len(layers), COLUMNS)
    wide = 0
    for row, layer in zip(table, layers, strict=True):
        row[C_IN], row[C_OUT] = _in_width(layer), layer.out_features
        wide = max(wide, _blocks(layer.out_features) * G)
        if isinstance(layer, Embedding):
            row[C_KIND], row[C_W] = K_EMBEDDING, cursor.put(layer.table)
            _release(release_source, layer.table)
        elif isinstance(layer, Linear):
            blocks = _blocks(layer.out_features)
            row[C_KIND], row[C_BLOCKS], row[C_ACT] = K_LINEAR, blocks, ACTIVATION_CODES[layer.activation]
            row[C_W] = cursor.dense_slabs(layer.weight, release_source)
            bias = np.zeros(blocks * G, np.float32)
            if layer.bias is not None:
                bias[: layer.out_features] = layer.bias
            row[C_B] = cursor.put(bias)
            row[C_PANEL] = tuning.panel_rows(layer.in_features)
        elif isinstance(layer, Activation):
            row[C_KIND], row[C_ACT] = K_ACTIVATION, ACTIVATION_CODES[layer.kind]
        elif isinstance(layer, LayerNorm):
            row[C_KIND] = K_LAYER_NORM
            row[C_W], row[C_B] = cursor.put(layer.weight), cursor.put(layer.bias)
            row[C_EPS] = cursor.put(np.array([layer.eps], np.float32))
        else:  # validate_layers allows a SelectLast only as post[0], which table_layers leaves out
            raise AssertionError(f"pack_layers: {type(layer).__name__} is not a row-wise layer")
    n_pre = len(spec.pre)
    n_post = len(layers) - n_pre
    buffers = 2 if max(n_pre, n_post) >= 2 else 1
    floats = step_scratch(spec, n_pre, wide, buffers)
    header_words[[W_LAYER_TABLE, W_PRE, W_POST, W_WIDE, W_BUFFERS, W_STEP_FLOATS]] = (
        table_at, n_pre, n_post, wide, buffers, floats)
    return floats


def _in_width(layer) -> int:
    return layer.vocab_size if isinstance(layer, Embedding) else layer.in_features


def _release(release_source, array) -> None:
    if release_source is not None:
        release_source(array)
