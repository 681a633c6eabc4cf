"""ONNX ops around an LSTM -> fastlstm layers (fastlstm.layers), for the whole-model importer (onnx_graph.py).

Two kinds of ops sit on the data path of a model around its LSTM nodes:
  glue     ops that only move, select or relabel values (Transpose, Reshape, Squeeze, Gather on fixed
           indices, Slice, Concat, Dropout, Identity, ...). onnx_graph checks what a run of them does by
           pushing index tensors through it (onnx_graph._push), so their parameters may be anything,
           computed from shapes included.
  compute  ops that become layers, working on the last axis of their data input:
             Gather(table, ids)          -> Embedding (table constant, axis 0)
             Gemm(x, B[, C])             -> Linear (transA = 0; weight = alpha B^T or alpha B; bias beta C)
             MatMul(x, W)                -> Linear (weight W^T, no bias); a following Add(., b) is its bias
             Add(x, b)                   -> the bias of the Linear just before it
             Relu / Tanh / Sigmoid       -> the Linear's activation, or an Activation layer
             Softmax / LogSoftmax        -> the same, over the last axis only
             LayerNormalization          -> LayerNorm (over the last axis only)
Every weight must fold to a constant (onnx_import's bounded folding); anything else is not covered,
which from_onnx reports without failing (it then converts the LSTM part only).
"""

from __future__ import annotations

import numpy as np
import onnx

from fastlstm.errors import ConversionError
from fastlstm.layers import DEFAULT_LAYER_NORM_EPS, Activation, Embedding, LayerNorm, Linear

from .onnx_fold import text

GLUE_OPS = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Dropout", "Concat", "Split",
            "Slice", "Gather", "Cast"}
COMPUTE_OPS = {"Gather", "Gemm", "MatMul", "Add", "Relu", "Tanh", "Sigmoid", "Softmax", "LogSoftmax",
               "LayerNormalization"}
_ELEMENTWISE = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid"}
_NORMALISERS = {"Softmax": "softmax", "LogSoftmax": "log_softmax"}
_INT_TYPES = {onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
              onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64}


class NotCovered(Exception):
    """A part of the graph that has no fastlstm layer; the message names the op."""


def describe_node(node: onnx.NodeProto) -> str:
    name = text(node.name)
    return f"{text(node.op_type)} {name!r}" if name else text(node.op_type)


def attributes(node: onnx.NodeProto) -> dict:
    out = {}
    for a in node.attribute:
        try:
            out[text(a.name)] = onnx.helper.get_attribute_value(a)
        except ValueError as exc:
            raise NotCovered(f"{describe_node(node)}: cannot read attribute {text(a.name)!r} ({exc})") from None
    return out


def is_glue(node: onnx.NodeProto, data_slots: list[int], on_ids: bool) -> bool:
    """Whether `node` only moves data when its dynamic inputs are the slots `data_slots`. on_ids: the data
    are token ids (integers: any integer or float Cast keeps them), else float features (Cast to float only)."""
    op = node.op_type
    if node.domain not in ("", "ai.onnx") or op not in GLUE_OPS:
        return False
    if op == "Gather":
        return data_slots == [0]  # data gathered at fixed indices; ids gathering a table is an Embedding
    if op == "Concat":
        return True
    if op == "Cast":
        to = attributes(node).get("to")
        return to in _INT_TYPES | {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE} if on_ids else (
            to == onnx.TensorProto.FLOAT)
    return data_slots == [0]


def constant(index, scope, name: str, label: str) -> np.ndarray:
    """The value of a weight input, folded from constants; NotCovered if it depends on an input."""
    try:
        return np.asarray(index.fold(scope, {name: label})[name])
    except ConversionError as exc:
        raise NotCovered(str(exc)) from None


def compute_layer(index, scope, node: onnx.NodeProto, slot: int, rank: int, opset: int):
    """The layer for a compute op whose dynamic input is input `slot` (a value of `rank` axes, features
    last). Returns a fastlstm layer, or ("bias", array) for an Add to merge into the Linear before it."""
    op, where, attrs = node.op_type, describe_node(node), attributes(node)
    if node.domain not in ("", "ai.onnx") or op not in COMPUTE_OPS:
        raise NotCovered(f"{where}: no fastlstm layer for this op")
    inputs = list(node.input)

    def weight(k, label):
        if k >= len(inputs) or not inputs[k]:
            return None
        return constant(index, scope, inputs[k], f"{where} {label}")

    if op == "Gather":
        if slot != 1 or int(attrs.get("axis", 0)) != 0:
            raise NotCovered(f"{where}: only Gather(table, ids) along axis 0 is an embedding")
        table = weight(0, "table")
        if table.ndim != 2 or not np.issubdtype(table.dtype, np.floating):
            raise NotCovered(f"{where}: an embedding table must be a 2-D float array, found {table.dtype} "
                             f"{table.shape}")
        return Embedding(table.astype(np.float32))
    if slot != 0 and op not in ("Add",):
        raise NotCovered(f"{where}: the data must be its first input")
    if op == "Gemm":
        if int(attrs.get("transA", 0)) or rank != 2:
            raise NotCovered(f"{where}: only Gemm(x, W) with transA=0 on 2-D data is a Linear layer")
        B, C = weight(1, "B"), weight(2, "C")
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        if B is None or B.ndim != 2:
            raise NotCovered(f"{where}: B must be a constant 2-D matrix")
        W = B if int(attrs.get("transB", 0)) else B.T
        bias = None if C is None else _bias(beta * C.astype(np.float64), W.shape[0], where)
        return Linear((alpha * W.astype(np.float64)).astype(np.float32), bias)
    if op == "MatMul":
        W = weight(1, "B")
        if W is None or W.ndim != 2 or not np.issubdtype(W.dtype, np.floating):
            raise NotCovered(f"{where}: only MatMul(x, W) with a constant 2-D float W is a Linear layer")
        return Linear(np.ascontiguousarray(W.T, dtype=np.float32), None)
    if op == "Add":
        other = weight(1 - slot, "addend")
        return ("bias", other)
    if op in _ELEMENTWISE:
        return ("activation", _ELEMENTWISE[op])
    if op in _NORMALISERS:
        axis = int(attrs.get("axis", -1 if opset >= 13 else 1))
        if axis not in (-1, rank - 1):
            raise NotCovered(f"{where}: axis {axis} is not the feature axis (the last of {rank})")
        return ("activation", _NORMALISERS[op])
    # LayerNormalization
    axis = int(attrs.get("axis", -1))
    if axis not in (-1, rank - 1):
        raise NotCovered(f"{where}: normalises from axis {axis}, fastlstm's LayerNorm only over the last axis")
    scale, shift = weight(1, "scale"), weight(2, "bias")
    if scale is None or scale.ndim != 1:
        raise NotCovered(f"{where}: the scale must be a constant vector")
    shift = np.zeros_like(scale) if shift is None else shift
    if shift.shape != scale.shape:
        raise NotCovered(f"{where}: bias shape {shift.shape} differs from the scale's {scale.shape}")
    if sum(1 for o in node.output if o) > 1:
        raise NotCovered(f"{where}: its mean / inverse std outputs are used")
    return LayerNorm(scale.astype(np.float32), shift.astype(np.float32),
                     float(attrs.get("epsilon", DEFAULT_LAYER_NORM_EPS)))


def _bias(array: np.ndarray, n: int, where: str) -> np.ndarray:
    """A constant broadcast along rows to (n,): shapes (n,), (1, n), (1,), () ."""
    a = np.asarray(array)
    if a.size == 1:
        return np.full(n, a.reshape(()), np.float32)
    if a.shape[-1:] == (n,) and a.size == n:
        return a.reshape(n).astype(np.float32)
    raise NotCovered(f"{where}: an addend of shape {a.shape} is not a per-feature bias of {n}")


def merge(layers: list, item, width: int, where: str) -> None:
    """Append the result of compute_layer to `layers` (width = the features it works on), merging a bias
    into the Linear before it and an activation into a Linear that has none."""
    if isinstance(item, tuple):
        kind, value = item
        last = layers[-1] if layers else None
        if kind == "bias":
            if not isinstance(last, Linear) or last.activation != "none":
                raise NotCovered(f"{where}: an Add that is not the bias of a Linear layer")
            bias = _bias(value, last.out_features, where).astype(np.float64)
            last.bias = (bias if last.bias is None else last.bias.astype(np.float64) + bias).astype(np.float32)
            return
        if isinstance(last, Linear) and last.activation == "none":
            last.activation = value
        else:
            layers.append(Activation(value, width))
        return
    layers.append(item)
