"""Inside one partition: validate the sequences, bucket them by length, run each bucket as one batch.

A batch runs as x (T, B, I) with sequence_lens (ONNX semantics: outputs past a row's length are 0), so
rows of different lengths share the time loop. Every row's output is bit for bit what the engine gives
for that sequence alone (its kernels sum each row in the same order whatever the batch), which the
tests check. Sorting by length keeps the padding (frames computed past a row's end) small.
"""

from __future__ import annotations

import numpy as np

from ..engine import Engine
from ..errors import InputError

DEFAULT_BATCH_SIZE = 32  # rows per run(): amortizes each weight load over the batch (docs/performance.md)
MAX_PADDING = 0.25  # a batch computes at most 25% more frames than its rows hold
BATCH_BYTES = 64 << 20  # bound on one batch's buffers (input, input projection, output): long sequences batch less


def as_sequence(item, input_size: int, name: str) -> np.ndarray:
    """item as a (T, I) float32 C-contiguous array, or an InputError naming it."""
    try:
        x = np.asarray(item)
    except (ValueError, TypeError) as exc:  # ragged nested lists and the like
        raise InputError(f"{name}: expected a (T, {input_size}) float array, found {type(item).__name__} "
                         f"({exc})") from None
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"{name}: expected a floating point array (float32 preferred), found {x.dtype}")
    if x.ndim != 2 or x.shape[1] != input_size:
        raise InputError(f"{name}: expected shape (T, {input_size}) (the model's input size is {input_size}), "
                         f"found {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


def check_positive(name: str, value) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise InputError(f"{name} must be a positive integer, found {value!r}")


def output_width(engine: Engine) -> int:
    """Features per output frame: directions x Hout."""
    return engine.num_directions * engine.output_size


def length_batches(lengths: np.ndarray, batch_size: int, max_rows_frames: int) -> list[np.ndarray]:
    """Indices into `lengths` (N,) grouped into batches of similar length, longest first.

    A batch holds at most `batch_size` rows, at most `max_rows_frames` padded frames (rows x its
    longest length) and computes at most MAX_PADDING more frames than its rows' lengths add up to.
    """
    order = np.argsort(-lengths, kind="stable")  # (N,) longest first; ties keep the input order
    batches, start = [], 0
    while start < len(order):
        longest = int(lengths[order[start]])
        rows_cap = max(1, min(batch_size, max_rows_frames // max(longest, 1)))
        end, frames = start + 1, longest
        while end < len(order) and end - start < rows_cap:
            frames_next = frames + int(lengths[order[end]])
            if (end - start + 1) * longest > (1 + MAX_PADDING) * frames_next:
                break  # the rest is shorter still: start a new batch
            end, frames = end + 1, frames_next
        batches.append(order[start:end])
        start = end
    return batches


def run_batched(engine: Engine, sequences: list[np.ndarray], batch_size: int = DEFAULT_BATCH_SIZE) -> list[np.ndarray]:
    """Outputs (T_i, D*Hout) float32 of sequences (T_i, I) float32 (validated by as_sequence), in order."""
    I, O = engine.input_size, output_width(engine)
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)  # (N,)
    frame_bytes = 4 * (I + 4 * engine.hidden_size + 2 * O)  # x, input projection, layer output, y per frame
    outputs: list[np.ndarray | None] = [None] * len(sequences)
    for batch in length_batches(lengths, batch_size, max(1, BATCH_BYTES // frame_bytes)):
        T = int(lengths[batch[0]])
        if T == 0:  # only empty rows left (run() needs T >= 1): their outputs are empty
            for i in batch:
                outputs[i] = np.zeros((0, O), dtype=np.float32)
            continue
        if len(batch) == 1:
            outputs[batch[0]] = engine.run(sequences[batch[0]])[0]  # y (T, O), owned
            continue
        x = np.zeros((T, len(batch), I), dtype=np.float32)  # (T, B, I), zero past each row's length
        for b, i in enumerate(batch):
            x[: lengths[i], b] = sequences[i]
        y, _ = engine.run(x, sequence_lens=lengths[batch])  # (T, B, O)
        for b, i in enumerate(batch):
            outputs[i] = np.ascontiguousarray(y[: lengths[i], b])  # a copy: the batch buffer is not kept alive
    return outputs
