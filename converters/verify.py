"""`convert --verify`: run the *source* runtime on random input and measure our error against it.

A whole model (layers around the LSTM) runs whole: ONNX Runtime on the original graph, or the PyTorch
module itself, on random valid inputs (token ids in [0, V) or N(0, 1) features, random lengths and
initial states when the model takes them), against Engine.run on the same. A bare LSTM runs as follows.

ONNX sources run in ONNX Runtime on a model cut from the original graph: the chain's LSTM nodes and
the shape ops between them, kept verbatim, with each weight input folded to a constant from the
original graph (so the weights ONNX Runtime sees never pass through our gate reordering).
PyTorch sources run in `torch.nn.LSTM` after `load_state_dict(strict=True)` of the file's own tensors
(nn.LSTMCell sources in nn.LSTMCell, stepped over time, a stack of cells layer by layer).
Both use a zero initial state, like the converted spec.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fastlstm.errors import ConversionError, VerificationError

from . import onnx_import, onnx_quantized, torch_import

VERIFY_STEPS, VERIFY_BATCH, VERIFY_SEED = 16, 2, 1234
_WEIGHT_SLOTS = (1, 2, 3, 7)  # W, R, B, P inputs of an ONNX LSTM node


def verify(source, spec, engine, tolerance: float = 2e-5) -> dict:
    """Compare `engine` (built from `spec`) with the source runtime; return what was measured.

    Raises VerificationError when the relative error exceeds `tolerance`, ConversionError when the
    source runtime is not installed or cannot run the source."""
    fmt = spec.source.get("format")
    if spec.pre or spec.post:  # a whole model: the source runtime on the whole graph / module
        x, runtime, expected, ours = _whole_model(source, spec, engine, np.random.default_rng(VERIFY_SEED))
    else:
        x = verify_input(spec, *((_onnx_fixed_sizes(source, spec) if fmt == "onnx" else None) or ()))
        if fmt == "onnx":
            runtime, expected = _onnx_runtime_output(source, spec, x)
        elif fmt == "torch":
            runtime, expected = _torch_output(source, spec, x)
        else:
            raise ConversionError(f"cannot verify a spec whose source format is {fmt!r}")
        ours, _ = engine.run(x)
    if ours.shape != expected.shape:
        raise VerificationError(f"verification against {runtime} failed: fastlstm returns shape {ours.shape}, "
                                f"the source {expected.shape}")
    max_abs = float(np.max(np.abs(ours.astype(np.float64) - expected)))
    scale = max(float(np.max(np.abs(expected))), 1.0)
    measured = {
        "runtime": runtime,
        "max_abs_error": max_abs,
        "rms_error": float(np.sqrt(np.mean((ours.astype(np.float64) - expected) ** 2))),
        "max_rel_error": max_abs / scale,
        "tolerance": tolerance,
        "input_shape": list(x.shape),
        "seed": VERIFY_SEED,
    }
    if not max_abs / scale <= tolerance:  # also catches NaN
        raise VerificationError(
            f"verification against {runtime} failed: max relative error {max_abs / scale:.3g} "
            f"exceeds the tolerance {tolerance:.0e} (max abs error {max_abs:.3g})"
        )
    return measured


def verify_input(spec, steps: int = VERIFY_STEPS, batch: int = VERIFY_BATCH) -> np.ndarray:
    """The random input every verification runs: (steps, batch, I) float32 N(0, 1), fixed seed; for a whole
    model what it takes: token ids (steps, batch) in [0, V), or (steps, batch, F) features."""
    rng = np.random.default_rng(VERIFY_SEED)
    if spec.vocab_size is not None:
        return rng.integers(0, spec.vocab_size, (steps, batch))
    return rng.standard_normal((steps, batch, spec.in_features)).astype(np.float32)


# --------------------------------------------------------------------------------- whole models


def _whole_model(source, spec, engine, rng):
    """Random valid inputs (token ids in [0, V), or N(0, 1) features; random lengths, initial states when
    the source takes them) through the source runtime's whole model and through `engine`.
    Returns (x, runtime name, expected float64, ours)."""
    model = spec.source.get("model", {})
    batch_first, squeeze = bool(spec.source.get("batch_first")), bool(model.get("squeeze"))
    T, B = VERIFY_STEPS, 1 if squeeze else VERIFY_BATCH
    fixed = list(model.get("input_shape") or [])[:2]  # the sizes a source graph fixes must be used
    if squeeze and fixed[:1] and fixed[0]:
        T = fixed[0]
    elif len(fixed) == 2:
        t_axis, b_axis = (1, 0) if batch_first else (0, 1)
        T, B = fixed[t_axis] or T, fixed[b_axis] or B
    if spec.vocab_size is not None:
        x = rng.integers(0, spec.vocab_size, (T, B))
    else:
        x = rng.standard_normal((T, B, spec.in_features)).astype(np.float32)
    state = engine.new_state(B)
    inputs = model.get("state_inputs", {})
    for key in inputs:
        array = getattr(state, key)
        array[...] = 0.5 * rng.standard_normal(array.shape).astype(np.float32)
    lens = None
    if model.get("sequence_lens"):
        lens = rng.integers(1, T + 1, B).astype(np.int32)
        lens[0] = T
    feed_x = x[:, 0] if squeeze else (np.swapaxes(x, 0, 1) if batch_first else x)
    ours, final = engine.run(feed_x, state, sequence_lens=lens, batch_first=batch_first)
    if model.get("output") is None:  # an encoder: its outputs are the final state
        if "h" not in model.get("state_outputs", {}):
            raise ConversionError("the model has neither an output nor h_n to verify")
        model = {**model, "output": model["state_outputs"]["h"]}
        ours = _state_as_torch(final.h)
    torch_source = spec.source.get("format") == "torch"
    run = _torch_module_output if torch_source else _onnx_graph_output
    runtime, expected = run(source, model, feed_x, {k: getattr(state, k) for k in inputs}, lens)
    return feed_x, runtime, expected, ours


def _state_as_torch(array: np.ndarray) -> np.ndarray:
    """A State's (L, D, B, n) as torch / ONNX-export layout (L*D, B, n)."""
    L, D, B, n = array.shape
    return np.ascontiguousarray(array.reshape(L * D, B, n))


def _onnx_graph_output(source, model, x, states, lens):
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConversionError("--verify of an ONNX model needs onnxruntime (pip install onnxruntime)") from None
    proto = onnx_import._load(source)
    proto.ir_version = min(proto.ir_version or 8, 10)  # what onnxruntime reads
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    dtype = onnx.helper.tensor_dtype_to_np_dtype(int(model.get("input_type", TensorProto.FLOAT)))
    feeds = {model["input"]: np.asarray(x).astype(dtype)}
    for key, name in model.get("state_inputs", {}).items():
        feeds[name] = _state_as_torch(states[key])
    if model.get("sequence_lens"):
        name = model["sequence_lens"]
        elem = next(i.type.tensor_type.elem_type for i in proto.graph.input if i.name == name)
        feeds[name] = lens.astype(onnx.helper.tensor_dtype_to_np_dtype(elem))
    try:
        session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        (y,) = session.run([model["output"]], feeds)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ConversionError(f"ONNX Runtime could not run the model: {str(exc).splitlines()[0]}") from None
    return f"onnxruntime {ort.__version__}", np.asarray(y, np.float64)


def _torch_module_output(source, model, x, states, lens):
    torch = torch_import._import_torch("--verify of a PyTorch model")
    if not isinstance(source, torch.nn.Module):
        raise ConversionError("verifying a whole PyTorch model needs the nn.Module it was converted from")
    if lens is not None:
        raise ConversionError("cannot verify a PyTorch module with sequence lengths")
    args = [torch.from_numpy(np.asarray(x))]
    args += [torch.from_numpy(_state_as_torch(states[k])) for k in ("h", "c") if k in states]
    with torch.no_grad():
        was_training = source.training
        source.eval()
        try:
            y = source(*args)
        finally:
            source.train(was_training)
    y = y[0] if isinstance(y, (tuple, list)) else y
    return f"torch {torch.__version__}", y.double().numpy()


# ------------------------------------------------------------------------------------------ ONNX


def _onnx_fixed_sizes(source, spec) -> tuple[int, int] | None:
    """The (T, B) the chain's shape ops fix (the dynamo exporter's Reshape to the export's shape), or None:
    ONNX Runtime can run the source at those sizes only."""
    index = onnx_import._ModelIndex(onnx_import._load(source))
    records = {rec.name: rec for rec in index.lstms}
    names = spec.source.get("node") or []
    names = [names] if isinstance(names, str) else list(names)
    if not names or any(n not in records for n in names):
        return None  # _cut_chain says so
    return onnx_import.chain_sizes(index, [records[n] for n in names])


def _onnx_runtime_output(source, spec, x: np.ndarray, keep_quantized: bool = False) -> tuple[str, np.ndarray]:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConversionError("--verify of an ONNX model needs onnxruntime (pip install onnxruntime)") from None
    model = onnx_import._load(source)
    cut, layout = _cut_chain(model, spec, keep_quantized)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 4  # fatal only: ORT's own log lines would break the CLI's one stderr line
    try:
        session = ort.InferenceSession(cut.SerializeToString(), options, providers=["CPUExecutionProvider"])
        feed = x if layout == 0 else np.ascontiguousarray(x.transpose(1, 0, 2))
        (y,) = session.run(["Y"], {"X": feed})
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ConversionError(f"ONNX Runtime could not run the LSTM chain: {str(exc).splitlines()[0]}") from None
    if layout == 1:  # (B, T, D, H) -> (T, D, B, H)
        y = y.transpose(1, 2, 0, 3)
    T, D, B, H = y.shape
    return f"onnxruntime {ort.__version__}", y.transpose(0, 2, 1, 3).reshape(T, B, D * H).astype(np.float64)


def _cut_chain(model: onnx.ModelProto, spec, keep_quantized: bool = False) -> tuple[onnx.ModelProto, int]:
    """A standalone model X -> Y of the spec's LSTM chain, weights folded from the original graph.

    DynamicQuantizeLSTM nodes become LSTM nodes on the float32 weights they stand for ((q - zero_point) *
    scale, the semantics fastlstm runs), or with keep_quantized stay as they are (ORT's own int8 kernel)."""
    index = onnx_import._ModelIndex(model)
    names = spec.source.get("node") or []
    names = [names] if isinstance(names, str) else list(names)
    records = {rec.name: rec for rec in index.lstms}
    if not names or any(n not in records for n in names):
        raise ConversionError(f"cannot find the converted LSTM node(s) {names} in the source model")
    chain = [records[n] for n in names]
    nodes, initializers = [], []
    available: set[str] = set()  # values the cut graph computes
    for k, rec in enumerate(chain):
        if k > 0:  # the shape-only ops that turn the previous Y into this X, constants folded
            _, between = onnx_import._data_predecessor(rec)
            for op in between:
                inputs = [op.input[0]] + [_cut_value(index, rec.scope, name, f"input {slot} of {op.op_type}",
                                                     nodes, initializers, available)
                                          for slot, name in enumerate(op.input[1:], start=1)]
                nodes.append(_copy_node(op, inputs))
                available.update(op.output)
        inputs = list(rec.node.input) + [""] * (8 - len(rec.node.input))
        inputs[0] = "X" if k == 0 else inputs[0]
        quantized = onnx_quantized.is_quantized_lstm(rec.node)
        slots = _WEIGHT_SLOTS
        if quantized and keep_quantized:
            slots = (*_WEIGHT_SLOTS, 8, 9, 10, 11)
        elif quantized:  # the dequantized weights in ONNX LSTM's layout; the scale inputs go
            weights = onnx_quantized.read_weights(index, rec, list(rec.node.input), f"LSTM node {rec.name!r}")
            inputs = inputs[:8]
            for slot, value in ((1, weights.W), (2, weights.R)):
                inputs[slot] = _add_constant(initializers, f"v{len(initializers)}", value)
            slots = (3, 7)
        for slot in slots:
            if inputs[slot]:
                value = index.fold(rec.scope, {inputs[slot]: f"{rec.name} input {slot}"})[inputs[slot]]
                kept = quantized and keep_quantized and slot in (1, 2, 9, 11)  # int8 / uint8 stay as they are
                inputs[slot] = _add_constant(initializers, f"v{len(initializers)}",
                                             value if kept else value.astype(np.float32))
        inputs[4] = inputs[5] = inputs[6] = ""  # sequence_lens, initial_h, initial_c: zero state
        while inputs and inputs[-1] == "":
            inputs.pop()
        outputs = list(rec.node.output) + [""] * (3 - len(rec.node.output))
        outputs[0] = "Y" if k == len(chain) - 1 else (outputs[0] or f"chain{k}.Y")
        op, domain = ((rec.node.op_type, rec.node.domain) if quantized and keep_quantized else ("LSTM", ""))
        nodes.append(helper.make_node(op, inputs, outputs[:1], name=rec.name, domain=domain,
                                      **_node_attributes(rec.node)))
        available.add(outputs[0])
    layout = int(spec.source.get("layout", 0) or 0)
    x_shape = ["T", "B", spec.input_size] if layout == 0 else ["B", "T", spec.input_size]
    graph = helper.make_graph(
        nodes, "verify",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        initializer=initializers,
    )
    opsets = [helper.make_opsetid("", index.opset or 14)]
    if keep_quantized:
        opsets.append(helper.make_opsetid(onnx_quantized.DOMAIN, 1))
    cut = helper.make_model(graph, opset_imports=opsets)
    cut.ir_version = min(model.ir_version or 8, 8)
    return cut, layout


def _cut_value(index, scope, name: str, label: str, nodes: list, initializers: list, available: set,
               depth: int = 0) -> str:
    """A name for value `name` in the cut graph: a folded constant, or (for a shape computed from the data,
    e.g. Shape -> Slice -> Concat in a dynamic-shape export) its ops copied verbatim."""
    if not name or name in available:
        return name
    try:
        value = index.fold(scope, {name: label})[name]
        return _add_constant(initializers, f"v{len(initializers)}", value)
    except ConversionError:
        found = scope.lookup(name)
        if found is None or found[0] != "node" or depth > 64:
            raise
    node = found[1]
    inputs = [_cut_value(index, found[2], dep, label, nodes, initializers, available, depth + 1) for dep in node.input]
    if name not in available:  # a node with several outputs may have been copied by a sibling already
        nodes.append(_copy_node(node, inputs))
        available.update(o for o in node.output if o)
    return name


def _copy_node(node: onnx.NodeProto, inputs: list[str]) -> onnx.NodeProto:
    return helper.make_node(node.op_type, inputs, list(node.output), name=node.name, domain=node.domain,
                            **_node_attributes(node))


def _add_constant(initializers: list, name: str, value: np.ndarray) -> str:
    initializers.append(numpy_helper.from_array(np.asarray(value), name))
    return name


def _node_attributes(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


# ----------------------------------------------------------------------------------------- torch


def _torch_output(source, spec, x: np.ndarray) -> tuple[str, np.ndarray]:
    """y (T, B, D*Hout) float64 of the source's module: nn.LSTM, or nn.LSTMCell(s) stepped over x."""
    torch = torch_import._import_torch("--verify of a PyTorch model")
    tensors = _source_tensors(source, spec)
    has_bias = any(kind.startswith("bias") for kind in tensors)
    state = {name: torch.as_tensor(np.asarray(value, dtype=np.float32)) if not isinstance(value, torch.Tensor)
             else value.detach().float() for name, value in tensors.items()}
    if spec.source.get("module", "LSTM") != "LSTM":
        return f"torch {torch.__version__}", _torch_cells_output(torch, spec, state, has_bias, x)
    lstm = torch.nn.LSTM(spec.input_size, spec.hidden_size, num_layers=spec.num_layers, bias=has_bias,
                         bidirectional=spec.num_directions == 2, proj_size=spec.proj_size)
    try:
        lstm.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConversionError(f"torch.nn.LSTM refused the source tensors: {str(exc).splitlines()[0]}") from None
    with torch.inference_mode():
        y, _ = lstm.eval()(torch.from_numpy(x))
    return f"torch {torch.__version__}", y.double().numpy()


def _torch_cells_output(torch, spec, state: dict, has_bias: bool, x: np.ndarray) -> np.ndarray:
    """An nn.LSTMCell per layer, stepped over time, cell k reading cell k-1's h: y (T, B, H) float64."""
    cells = []
    for l in range(spec.num_layers):
        cell = torch.nn.LSTMCell(spec.input_size if l == 0 else spec.hidden_size, spec.hidden_size, bias=has_bias)
        own = {kind: state[f"{kind}_l{l}"] for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
               if f"{kind}_l{l}" in state}
        try:
            cell.load_state_dict(own, strict=True)
        except RuntimeError as exc:
            raise ConversionError(f"torch.nn.LSTMCell refused the source tensors: {str(exc).splitlines()[0]}") from None
        cells.append(cell.eval())
    T, B, _ = x.shape
    h = [torch.zeros(B, spec.hidden_size) for _ in cells]
    c = [torch.zeros(B, spec.hidden_size) for _ in cells]
    ys = []
    with torch.inference_mode():
        for t in range(T):
            inp = torch.from_numpy(x[t])
            for l, cell in enumerate(cells):
                h[l], c[l] = cell(inp, (h[l], c[l]))
                inp = h[l]
            ys.append(inp)
    return torch.stack(ys).double().numpy()


def _source_tensors(source, spec) -> dict:
    """The source's own LSTM tensors under nn.LSTM's names (prefix removed)."""
    if isinstance(source, dict):
        state = source
    else:
        from pathlib import Path

        state = torch_import._read_file(Path(source))
    prefix = spec.source.get("prefix") or ""
    try:
        _, group, _, _ = torch_import.find_lstm(state, prefix)
    except ConversionError:
        raise ConversionError(f"cannot find the converted LSTM (prefix {prefix!r}) in the source") from None
    return {f"{kind}_l{layer}{'_reverse' if d else ''}": value for (kind, layer, d), value in group.items()}
