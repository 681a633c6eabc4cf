"""Whole PyTorch models: a module that is more than an nn.LSTM, through an in-memory ONNX export.

`from_torch(module, example_input=x)` traces the module with torch.onnx.export (the TorchScript exporter
first, `dynamo=True` when that one fails or its graph is not covered), with every axis of the sequence
input dynamic but its feature axis, and converts the graph with onnx_graph.from_onnx. A module the
export cannot cover is converted as before (its LSTM, found by name), with the note saying why.

A state_dict or a .pt file holds weights only: what runs between them (the topology) is Python code
that is not in the file, so a whole model can only come from the module itself or from an ONNX export.
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings

import numpy as np

from fastlstm.errors import ConversionError

from . import onnx_graph


def from_module(module, example_input) -> tuple:
    """(spec or None, note): the whole model when the export covers it, else (None, why)."""
    import torch

    args = example_input if isinstance(example_input, tuple) else (example_input,)
    args = tuple(torch.as_tensor(a) if isinstance(a, np.ndarray) else a for a in args)
    if not args or not all(isinstance(a, torch.Tensor) for a in args):
        raise ConversionError("example_input must be a tensor (the sequence input) or a tuple of tensors "
                              "(sequence input, h0, c0)")
    notes = []
    for dynamo in (False, True):
        try:
            data = _export(torch, module, args, dynamo)
        except Exception as exc:  # exporters raise many types; the other exporter may still work
            notes.append(f"torch.onnx.export(dynamo={dynamo}) failed: {type(exc).__name__}: "
                         f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the note is returned instead
            try:
                spec = onnx_graph.from_onnx(data)
            except ConversionError as exc:
                notes.append(f"the dynamo={dynamo} export: {exc}")
                continue
        if spec.pre or spec.post or not spec.source.get("not_covered"):
            spec.source.update({"format": "torch", "module": type(module).__name__, "exporter":
                                "dynamo" if dynamo else "torchscript", "torch_version": str(torch.__version__)})
            return spec, None
        notes.append(spec.source["not_covered"])
    return None, "; ".join(notes)


def _export(torch, module, args, dynamo: bool) -> bytes:
    """The module as ONNX bytes; the sequence input's axes dynamic but a float input's last (features),
    h0 / c0 dynamic in their batch axis."""
    x = args[0]
    seq_axes = list(range(x.dim() if not torch.is_floating_point(x) else x.dim() - 1))
    names = ["x", "h0", "c0"][: len(args)]
    buf = io.BytesIO()
    kwargs = {"dynamo": dynamo, "input_names": names}
    if dynamo:
        shapes = [{a: torch.export.Dim.AUTO for a in seq_axes}] + [{1: torch.export.Dim.AUTO} for _ in args[1:]]
        kwargs["dynamic_shapes"] = tuple(shapes)
    else:
        axes = {"x": {a: f"x{a}" for a in seq_axes}}
        axes.update({name: {1: "batch"} for name in names[1:]})
        kwargs["dynamic_axes"] = axes
    was_training = module.training
    module.eval()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            exported = torch.onnx.export(module, args, buf if not dynamo else None, **kwargs)
            if dynamo:
                return exported.model_proto.SerializeToString()
    finally:
        module.train(was_training)
    return buf.getvalue()


def is_module(obj) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)
