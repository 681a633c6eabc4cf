"""ONNX -> fastlstm ModelSpec.

`from_onnx` finds the LSTM node(s) of a model (subgraphs of If/Loop/Scan included), folds their weights
to arrays and rewrites them once into the canonical layout of `fastlstm.spec`:

    ONNX                                   canonical
    W (D, 4H, I)   gates i, o, f, c        W (4H, I)    gates i, f, g, o
    R (D, 4H, H)                           R (4H, H)
    B (D, 8H) = [Wb, Rb]                   b (4H,) = Wb + Rb
    P (D, 3H) = [p_i, p_o, p_f]            peephole (3, H) rows p_i, p_f, p_o

Several LSTM nodes chained through shape-only ops (what `torch.onnx.export` writes for
`nn.LSTM(num_layers=N)`) become one N-layer spec; the chain is checked by pushing an index tensor through
the ops between the nodes, so only arrangements equal to (T, D, B, H) -> (T, B, D*H) are accepted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from fastlstm.errors import ConversionError, SpecError
from fastlstm.format import MAX_DIM
from fastlstm.spec import ACTIVATIONS, CellOptions, DirectionSpec, ModelSpec, canonical_activation

from . import onnx_quantized
from .onnx_fold import FoldLimit, run_bounded, text

# ONNX gate blocks are (i, o, f, c); canonical is (i, f, g, o): take ONNX blocks in this order.
_GATES_FROM_ONNX = (0, 2, 3, 1)
# ONNX P rows are (p_i, p_o, p_f); canonical rows are (p_i, p_f, p_o).
_PEEPHOLE_FROM_ONNX = (0, 2, 1)
_DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}
_LSTM_INPUTS = ("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P")
# Ops allowed between chained LSTM nodes: they only move data (checked exactly on an index tensor).
_SHAPE_OPS = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Flatten"}
_A = onnx.AttributeProto
_ATTR_TYPES = {  # (op, attribute) -> the type the ONNX operator declares, for every attribute read here
    ("LSTM", "hidden_size"): _A.INT, ("LSTM", "layout"): _A.INT, ("LSTM", "input_forget"): _A.INT,
    ("LSTM", "clip"): _A.FLOAT, ("LSTM", "direction"): _A.STRING, ("LSTM", "activations"): _A.STRINGS,
    ("LSTM", "activation_alpha"): _A.FLOATS, ("LSTM", "activation_beta"): _A.FLOATS,
    ("Transpose", "perm"): _A.INTS,
}
_ATTR_TYPES.update({(onnx_quantized.OP_TYPE, attr): kind for (op, attr), kind in _ATTR_TYPES.items() if op == "LSTM"})
MAX_DENSE_ELEMENTS = 1 << 28  # a sparse initializer is densified only up to 1 GiB of float32


def from_onnx(source, node=None) -> ModelSpec:
    """Convert the LSTM node(s) of an ONNX model into a validated ModelSpec.

    source: a path, the file's bytes, or an onnx.ModelProto.
    node:   None (the only LSTM, or the single chain all LSTM nodes form), a node name, or a sequence
            of names forming a chain in order. Unnamed nodes are called LSTM_0, LSTM_1, ... in
            traversal order.
    """
    model = _load(source)
    index = _ModelIndex(model)
    if not index.lstms:
        ops = sorted({text(op) for op in index.op_types})  # a corrupt name may come back as bytes
        raise ConversionError(
            f"no LSTM node in the model: expected an ONNX 'LSTM' operator or ONNX Runtime's "
            f"com.microsoft.DynamicQuantizeLSTM (cells decomposed into "
            f"MatMul/Gemm/Sigmoid/Tanh are not recognised); found ops: {', '.join(ops) if ops else 'none'}"
        )
    chosen = _select(index, node)
    layers = [_convert_node(index, rec) for rec in chosen]
    return _assemble(model, index, chosen, layers)


# ----------------------------------------------------------------------------------------- loading


def _load(source) -> onnx.ModelProto:
    if isinstance(source, onnx.ModelProto):
        model = source
        what = "the ModelProto"
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        what = f"the given bytes ({len(data)} bytes)"
        if not data:
            raise ConversionError("cannot read ONNX model: the given bytes are empty")
        model = _parse(data, what)
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        what = repr(path)
        if not os.path.exists(path):
            raise ConversionError(f"cannot read ONNX model {path!r}: no such file")
        if os.path.isdir(path):
            raise ConversionError(f"cannot read ONNX model {path!r}: it is a directory, expected a file")
        if os.path.getsize(path) == 0:
            raise ConversionError(f"cannot read ONNX model {path!r}: the file is empty")
        with open(path, "rb") as fh:
            model = _parse(fh.read(), what)
        try:
            onnx.external_data_helper.load_external_data_for_model(model, os.path.dirname(path) or ".")
        except Exception as exc:
            raise ConversionError(
                f"cannot read the external data of ONNX model {path!r}: {type(exc).__name__}: {exc}"
            ) from None
    else:
        raise ConversionError(
            f"from_onnx expects a path, bytes or onnx.ModelProto, got {type(source).__name__}"
        )
    if not model.HasField("graph") or (len(model.graph.node) == 0 and not model.opset_import):
        raise ConversionError(f"cannot read ONNX model {what}: it holds no graph (not an ONNX model?)")
    return model


def _parse(data: bytes, what: str) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # google.protobuf.message.DecodeError and friends
        raise ConversionError(
            f"cannot read ONNX model {what}: not a valid ONNX protobuf ({type(exc).__name__})"
        ) from None
    return model


# ------------------------------------------------------------------------------------ graph index


@dataclass
class _Scope:
    """One graph (the main graph or a subgraph) with what it produces; `parent` is the outer scope."""

    graph: onnx.GraphProto
    parent: _Scope | None
    depth: int
    producers: dict = field(default_factory=dict)  # value name -> (node, position in graph)
    initializers: dict = field(default_factory=dict)  # name -> TensorProto
    inputs: set = field(default_factory=set)  # formal inputs without an initializer

    def lookup(self, name):
        """-> ("node", node, scope) | ("init", tensor, scope) | ("input", None, scope) | None."""
        scope = self
        while scope is not None:
            if name in scope.producers:
                return "node", scope.producers[name][0], scope
            if name in scope.initializers:
                return "init", scope.initializers[name], scope
            if name in scope.inputs:
                return "input", None, scope
            scope = scope.parent
        return None


@dataclass
class _LstmRecord:
    name: str
    node: onnx.NodeProto
    scope: _Scope


class _ModelIndex:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.opset = next(
            (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None
        )
        self.lstms: list[_LstmRecord] = []
        self.op_types: set[str] = set()
        self._unnamed = 0
        self._add_scope(model.graph, None)
        taken = set()
        for rec in self.lstms:  # keep listings unambiguous even if names repeat
            base, k = rec.name, 1
            while rec.name in taken:
                rec.name = f"{base}#{k}"
                k += 1
            taken.add(rec.name)

    def _add_scope(self, graph, parent):
        scope = _Scope(graph, parent, 0 if parent is None else parent.depth + 1)
        scope.initializers = {t.name: t for t in graph.initializer}
        scope.initializers.update({t.values.name: _densify(t) for t in graph.sparse_initializer})
        scope.inputs = {i.name for i in graph.input if i.name not in scope.initializers}
        for pos, node in enumerate(graph.node):
            self.op_types.add(node.op_type)
            for out in node.output:
                if out:
                    scope.producers[out] = (node, pos)
            if _is_lstm(node):
                name = text(node.name) or f"LSTM_{self._unnamed}"  # bytes if not UTF-8
                if not node.name:
                    self._unnamed += 1
                self.lstms.append(_LstmRecord(name, node, scope))
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    self._add_scope(attr.g, scope)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for sub in attr.graphs:
                        self._add_scope(sub, scope)
        return scope

    # -------------------------------------------------------------------------------- folding

    def fold(self, scope: _Scope, names: dict[str, str], feeds: dict | None = None) -> dict:
        """Evaluate values `names` ({value name: label for errors}) from constants alone.

        Only the values' ancestors are evaluated (onnx.reference), each node checked against the folding
        limits (onnx_fold.MAX_FOLD_BYTES and friends). `feeds` maps value names to arrays that
        stand in for non-constant values (used to push index tensors through chains)."""
        feeds = feeds or {}
        nodes: dict[int, tuple] = {}  # id(node) -> (depth, position, node)
        inits: dict[str, onnx.TensorProto] = {}
        out = {}
        for name, label in names.items():
            if name in feeds:
                continue
            found = scope.lookup(name)
            if found is not None and found[0] == "init":
                out[name] = _tensor_to_array(found[1], label)
                continue
            self._collect(scope, name, label, nodes, inits, feeds, set())
        missing = [n for n in names if n not in out]
        if not missing:
            return out
        ordered = [n for _, _, n in sorted(nodes.values(), key=lambda item: item[:2])]
        try:  # building the graph fails too for a corrupt file (e.g. names that are not UTF-8)
            graph = onnx.helper.make_graph(
                ordered,
                "fold",
                [onnx.helper.make_value_info(n, onnx.TypeProto()) for n in feeds],
                [onnx.helper.make_value_info(n, onnx.TypeProto()) for n in missing if n not in feeds],
                initializer=list(inits.values()),
            )
            fold_model = onnx.helper.make_model(
                graph, opset_imports=list(self.model.opset_import), functions=list(self.model.functions)
            )
            fold_model.ir_version = self.model.ir_version or onnx.IR_VERSION
            values = run_bounded(fold_model, dict(feeds))
        except FoldLimit as exc:
            labels = ", ".join(names[n] for n in missing)
            raise ConversionError(f"cannot fold {labels} to constants: {exc}") from None
        except Exception as exc:
            labels = ", ".join(names[n] for n in missing)
            raise ConversionError(
                f"cannot fold {labels} to constants: evaluating the ops that compute it failed "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            ) from None
        outputs = [n for n in missing if n not in feeds]
        out.update({n: np.asarray(v) for n, v in zip(outputs, values, strict=True)})
        out.update({n: feeds[n] for n in missing if n in feeds})
        return out

    def _collect(self, scope, name, label, nodes, inits, feeds, seen):
        if name in seen or name in feeds or name == "":
            return
        seen.add(name)
        found = scope.lookup(name)
        if found is None:
            raise ConversionError(f"{label}: value {name!r} is produced by nothing in the model")
        kind, obj, owner = found
        if kind == "input":
            where = "graph input" if owner.parent is None else "subgraph input"
            raise ConversionError(
                f"{label} is not constant: depends on {where} {name!r} (expected weights computed "
                f"from initializers / Constant nodes only)"
            )
        if kind == "init":
            inits[name] = obj
            return
        key = id(obj)
        if key in nodes:
            return
        nodes[key] = (owner.depth, owner.producers[name][1], obj)
        deps = list(obj.input)
        for attr in obj.attribute:  # subgraphs may read outer values implicitly
            subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subs:
                deps.extend(_implicit_inputs(sub))
        for dep in deps:
            self._collect(owner, dep, label, nodes, inits, feeds, seen)


def _is_lstm(node: onnx.NodeProto) -> bool:
    """An ONNX LSTM, or ONNX Runtime's int8 one (converters/onnx_quantized.py)."""
    return (node.op_type == "LSTM" and node.domain in ("", "ai.onnx")) or onnx_quantized.is_quantized_lstm(node)


def _implicit_inputs(graph: onnx.GraphProto) -> list[str]:
    """Names a subgraph reads from its enclosing scopes."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    used = []
    for node in graph.node:
        for name in node.input:
            if name and name not in defined:
                used.append(name)
        for attr in node.attribute:
            subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            used.extend(n for sub in subs for n in _implicit_inputs(sub) if n not in defined)
        defined.update(o for o in node.output if o)
    return used


def _densify(sparse: onnx.SparseTensorProto) -> onnx.TensorProto:
    """A sparse initializer as the dense tensor it stands for (weights are small enough)."""
    dims = tuple(sparse.dims)
    size = 1
    for n in dims:  # the dims are the file's word: refuse absurd ones before allocating
        size *= max(n, 0)
    if any(n < 0 for n in dims) or size > MAX_DENSE_ELEMENTS:
        raise ConversionError(
            f"sparse initializer {text(sparse.values.name)!r}: dims {list(dims)[:8]} are negative or "
            f"exceed {MAX_DENSE_ELEMENTS} elements (not a plausible LSTM weight)"
        )
    try:
        values = numpy_helper.to_array(sparse.values)
        indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
        dense = np.zeros(dims, dtype=values.dtype)
        if indices.ndim == 1:  # linearised indices
            dense.reshape(-1)[indices] = values
        else:  # (NNZ, rank) coordinates
            dense[tuple(indices.T)] = values
        return numpy_helper.from_array(dense, sparse.values.name)
    except (ValueError, TypeError, IndexError) as exc:  # wrong element type, indices out of range, ...
        raise ConversionError(
            f"sparse initializer {text(sparse.values.name)!r} is malformed: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}"
        ) from None


def _tensor_to_array(tensor: onnx.TensorProto, label: str) -> np.ndarray:
    if tensor.data_location == onnx.TensorProto.EXTERNAL and not tensor.HasField("raw_data"):
        location = {e.key: e.value for e in tensor.external_data}.get("location", "?")
        raise ConversionError(
            f"{label}: tensor {tensor.name!r} keeps its data in external file {location!r}, which was "
            f"not loaded (pass the model's path so the file can be found next to it)"
        )
    try:
        return numpy_helper.to_array(tensor)
    except Exception as exc:
        raise ConversionError(f"{label}: cannot read tensor {tensor.name!r}: {exc}") from None


# -------------------------------------------------------------------------------------- selection


def _select(index: _ModelIndex, node) -> list[_LstmRecord]:
    by_name = {rec.name: rec for rec in index.lstms}
    available = ", ".join(repr(n) for n in by_name)
    if node is not None:
        if isinstance(node, str):
            wanted = [node]
        elif isinstance(node, (list, tuple)):
            wanted = list(node)
        else:
            raise ConversionError(f"node= must be a name or a list of names, got {type(node).__name__}; "
                                  f"LSTM nodes in the model: {available}")
        if not wanted:
            raise ConversionError(f"node= is empty; LSTM nodes in the model: {available}")
        for name in wanted:
            if not isinstance(name, str) or name not in by_name:
                raise ConversionError(f"no LSTM node named {name!r}; LSTM nodes in the model: {available}")
        chosen = [by_name[n] for n in wanted]
        for prev, nxt in zip(chosen, chosen[1:], strict=False):
            reason = _link_problem(index, prev, nxt)
            if reason:
                raise ConversionError(
                    f"LSTM nodes {prev.name!r} -> {nxt.name!r} do not form a layer chain: {reason}"
                )
        return chosen
    if len(index.lstms) == 1:
        return list(index.lstms)
    chain = _single_chain(index)
    if chain is not None:
        return chain
    raise ConversionError(
        f"the model holds {len(index.lstms)} LSTM nodes that do not form one layer chain; pick one "
        f"with node=NAME (CLI: --node NAME; fastlstm convert --list SRC describes each). LSTM nodes: {available}"
    )


def _single_chain(index: _ModelIndex) -> list[_LstmRecord] | None:
    """The LSTM nodes in layer order if they all form one chain, else None."""
    recs = index.lstms
    successor = {}
    has_pred = set()
    for nxt in recs:
        prev = _data_predecessor(nxt)
        if prev is None:
            continue
        prev_rec = next((r for r in recs if r.node is prev[0]), None)
        if prev_rec is None or _link_problem(index, prev_rec, nxt):
            return None
        if (_direction_count(prev_rec), _declared_hidden(index, prev_rec)) != (
            _direction_count(nxt), _declared_hidden(index, nxt)
        ):
            return None  # a spec has one hidden size and direction count for all layers
        if prev_rec.name in successor:
            return None
        successor[prev_rec.name] = nxt
        has_pred.add(nxt.name)
    heads = [r for r in recs if r.name not in has_pred]
    if len(heads) != 1:
        return None
    chain = [heads[0]]
    while chain[-1].name in successor:
        chain.append(successor[chain[-1].name])
    return chain if len(chain) == len(recs) else None


def _data_predecessor(rec: _LstmRecord):
    """Follow X back through shape-only ops; -> (LSTM node, [ops between, in data order]) or None."""
    name = rec.node.input[0] if rec.node.input else ""
    path = []
    while name:
        found = rec.scope.lookup(name)
        if found is None or found[0] != "node":
            return None
        producer = found[1]
        if _is_lstm(producer):
            return (producer, path[::-1]) if producer.output[0] == name else None
        if producer.op_type not in _SHAPE_OPS or not producer.input:
            return None
        path.append(producer)
        name = producer.input[0]
    return None


def _batch_first_input(rec: _LstmRecord) -> bool | None:
    """Whether the first layer reads a graph input through Transpose(1, 0, 2) (what torch.onnx.export
    writes for batch_first=True): True; directly: False; anything else: None (unknown)."""
    name = rec.node.input[0]
    found = rec.scope.lookup(name)
    if found is not None and found[0] == "input":
        return _layout(rec) == 1
    if found is None or found[0] != "node" or found[1].op_type != "Transpose" or _layout(rec) != 0:
        return None
    perm = list(_attrs(found[1]).get("perm", []))
    src = rec.scope.lookup(found[1].input[0])
    return True if perm == [1, 0, 2] and src is not None and src[0] == "input" else None


def _link_problem(index: _ModelIndex, prev: _LstmRecord, nxt: _LstmRecord) -> str | None:
    """Why `nxt` is not the layer after `prev` (None if it is)."""
    return _link_check(index, prev, nxt)[0]


def _link_check(index: _ModelIndex, prev: _LstmRecord, nxt: _LstmRecord):
    """-> (why `nxt` is not the layer after `prev` or None, the (T, B) the link only holds at or None).

    The ops between are checked on an index tensor of small sizes first. Ops that fix T and B (what the
    dynamo exporter writes: Reshape to the export's shape) cannot take those, so the sizes the graph
    declares are tried next; such a link is the layer stack at the sizes the file can run."""
    found = _data_predecessor(nxt)
    if found is None or found[0] is not prev.node:
        return (f"the X input of {nxt.name!r} is not computed from {prev.name!r}'s output Y by shape-only ops",
                None)
    if prev.scope is not nxt.scope:
        return "the nodes live in different (sub)graphs", None
    path = found[1]
    D, H = _direction_count(prev), _declared_hidden(index, prev)
    if H is None:
        return f"cannot tell the hidden size of {prev.name!r}", None
    if not path:
        return f"{prev.name!r}'s Y (4-D) feeds {nxt.name!r}'s X (3-D) directly", None
    problem = _arrangement_problem(index, prev, nxt, path, 3, 2, D, H)
    if problem is None:
        return None, None
    for T, B in _declared_sizes(index, prev, nxt, path):
        if T * D * B * H <= _MAX_INDEX_ELEMENTS:
            problem = _arrangement_problem(index, prev, nxt, path, T, B, D, H)  # the file's sizes say more
            if problem is None:
                return None, (T, B)
    return problem, None


_MAX_INDEX_ELEMENTS = 1 << 22  # the index tensor of a chain check (float32 counts exactly up to 2**24)


def _arrangement_problem(index, prev, nxt, path, T, B, D, H) -> str | None:
    """Push the index tensor of prev's Y (T, D, B, H) through the ops between; None if they make the layer
    input (T, B, D*H) with directions concatenated (or its batch-major form for a layout-1 `nxt`)."""
    canonical = np.arange(T * D * B * H, dtype=np.float32).reshape(T, D, B, H)
    y_prev = canonical if _layout(prev) == 0 else canonical.transpose(2, 0, 1, 3)
    expected = canonical.transpose(0, 2, 1, 3).reshape(T, B, D * H)
    if _layout(nxt) == 1:
        expected = expected.transpose(1, 0, 2)
    target = path[-1].output[0]
    try:
        got = index.fold(nxt.scope, {target: f"the ops between {prev.name!r} and {nxt.name!r}"},
                         feeds={prev.node.output[0]: y_prev})[target]
    except ConversionError as exc:
        return str(exc)
    if got.shape != expected.shape or not np.array_equal(got, expected):
        return (f"the ops between them turn Y into shape {got.shape}, not the layer input "
                f"(T, B, D*H) = {expected.shape} with directions concatenated")
    return None


def _declared_sizes(index, prev, nxt, path) -> list[tuple[int, int]]:
    """(T, B) pairs the graph fixes around a link: constant 3-D Reshape targets between the nodes and the
    static shapes declared for prev's X and Y (graph inputs, outputs, value_info)."""
    sizes = []
    for op in path:
        if op.op_type == "Reshape" and len(op.input) > 1 and op.input[1]:
            try:
                target = index.fold(nxt.scope, {op.input[1]: "a Reshape target"})[op.input[1]]
            except ConversionError:
                continue  # computed from the data: the small index tensor already covered it
            dims = [int(v) for v in np.asarray(target).reshape(-1)[:4]]
            if len(dims) == 3 and min(dims[:2]) > 0:
                sizes.append((dims[0], dims[1]) if _layout(nxt) == 0 else (dims[1], dims[0]))
    x_dims = _static_dims(prev.scope, prev.node.input[0])
    if x_dims is not None and len(x_dims) == 3 and None not in x_dims[:2]:
        sizes.append(tuple(x_dims[:2]) if _layout(prev) == 0 else (x_dims[1], x_dims[0]))
    y_dims = _static_dims(prev.scope, prev.node.output[0])
    if y_dims is not None and len(y_dims) == 4:
        T, B = (y_dims[0], y_dims[2]) if _layout(prev) == 0 else (y_dims[1], y_dims[0])
        if T is not None and B is not None:
            sizes.append((T, B))
    return [s for k, s in enumerate(sizes) if s not in sizes[:k] and min(s) > 0]


def _static_dims(scope: _Scope, name: str) -> list | None:
    """The dims a (sub)graph declares for value `name` (None for a symbolic dim), or None if undeclared."""
    while scope is not None:
        for info in (*scope.graph.value_info, *scope.graph.input, *scope.graph.output):
            if info.name == name and info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape"):
                return [d.dim_value if d.HasField("dim_value") else None
                        for d in info.type.tensor_type.shape.dim]
        scope = scope.parent
    return None


def chain_sizes(index: _ModelIndex, chain: list[_LstmRecord]) -> tuple[int, int] | None:
    """The (T, B) a chain's shape ops fix (verify must run the source at those sizes), None if free."""
    for prev, nxt in zip(chain, chain[1:], strict=False):
        sizes = _link_check(index, prev, nxt)[1]
        if sizes is not None:
            return sizes
    return None


# ------------------------------------------------------------------------------------- conversion


def _attrs(node: onnx.NodeProto) -> dict:
    """Attribute values; the types of the attributes this module reads are checked (a file that lies
    about them gets a ConversionError, not a TypeError deep inside the import)."""
    out = {}
    for a in node.attribute:
        expected = _ATTR_TYPES.get((node.op_type, a.name))
        if expected is not None and a.type != expected:
            raise ConversionError(
                f"{text(node.op_type)} node {text(node.name)!r}: attribute {text(a.name)!r} must be of "
                f"type {_attr_type_name(expected)}, found {_attr_type_name(a.type)}"
            )
        try:
            out[a.name] = onnx.helper.get_attribute_value(a)
        except ValueError as exc:  # reference attributes, unknown attribute types
            raise ConversionError(
                f"{text(node.op_type)} node {text(node.name)!r}: cannot read attribute {text(a.name)!r} "
                f"({str(exc).splitlines()[0][:120]})"
            ) from None
    return out


def _attr_type_name(code: int) -> str:
    try:
        return onnx.AttributeProto.AttributeType.Name(code)
    except ValueError:
        return f"unknown type {code}"


def _direction(rec: _LstmRecord) -> str:
    raw = text(_attrs(rec.node).get("direction", "forward"))
    direction = raw.lower()
    if direction not in _DIRECTIONS:
        raise ConversionError(
            f"LSTM node {rec.name!r}: unknown direction {raw!r}; expected forward, reverse or bidirectional"
        )
    return direction


def _direction_count(rec: _LstmRecord) -> int:
    return _DIRECTIONS[_direction(rec)]


def _layout(rec: _LstmRecord) -> int:
    return int(_attrs(rec.node).get("layout", 0))


def _declared_hidden(index: _ModelIndex, rec: _LstmRecord) -> int | None:
    hidden = _attrs(rec.node).get("hidden_size")
    if hidden is not None:  # only plausible sizes: the chain check allocates T*D*B*H values
        return int(hidden) if 1 <= hidden <= MAX_DIM else None
    try:
        R = index.fold(rec.scope, {rec.node.input[2]: "R"})[rec.node.input[2]]
        return int(R.shape[1] if onnx_quantized.is_quantized_lstm(rec.node) else R.shape[-1])  # (D, H, 4H)
    except (ConversionError, IndexError):
        return None


@dataclass
class _NodeWeights:
    name: str
    directions: list[DirectionSpec]
    input_size: int
    hidden_size: int
    layout: int
    quantized: dict | None = None  # DynamicQuantizeLSTM: what onnx_quantized.QuantizedWeights.note() says


def _convert_node(index: _ModelIndex, rec: _LstmRecord) -> _NodeWeights:
    node, where = rec.node, f"LSTM node {rec.name!r}"
    inputs = list(node.input) + [""] * (len(_LSTM_INPUTS) - len(node.input))
    for k, label in ((0, "X (the sequence)"), (1, "W (input weights)"), (2, "R (recurrence weights)")):
        if not inputs[k]:
            raise ConversionError(f"{where}: required input {label} is missing")
    attrs = _attrs(node)
    direction = _direction(rec)
    D = _DIRECTIONS[direction]
    layout = int(attrs.get("layout", 0))
    if layout not in (0, 1):
        raise ConversionError(f"{where}: layout must be 0 or 1, found {layout}")

    declared_hidden = attrs.get("hidden_size")
    if isinstance(declared_hidden, int) and declared_hidden >= 1:  # before the weights: a clearer message
        _check_initial_state(index, rec, inputs, D, declared_hidden, layout)

    wanted = {inputs[1]: f"{where} input W", inputs[2]: f"{where} input R"}
    if inputs[3]:
        wanted[inputs[3]] = f"{where} input B"
    if inputs[7]:
        wanted[inputs[7]] = f"{where} input P"
    quantized = None
    if onnx_quantized.is_quantized_lstm(node):  # int8 W, R + scales: checked there, float32 views here
        wanted.pop(inputs[1], None), wanted.pop(inputs[2], None)
        quantized = onnx_quantized.read_weights(index, rec, list(node.input), where)
    arrays = index.fold(rec.scope, wanted)
    W, R = (arrays[inputs[1]], arrays[inputs[2]]) if quantized is None else (quantized.W, quantized.R)
    for label, arr in (("W", W), ("R", R)):
        if arr.ndim != 3:
            raise ConversionError(f"{where}: {label} must be 3-D (num_directions, 4*hidden, ...), "
                                  f"found shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.floating):
            raise ConversionError(f"{where}: {label} must hold floating point weights, found {arr.dtype}")

    H = int(attrs["hidden_size"]) if "hidden_size" in attrs else R.shape[2]
    if H < 1:
        raise ConversionError(f"{where}: hidden_size must be positive, found {H}")
    I = W.shape[2]
    shapes = {"W": (W, (D, 4 * H, I)), "R": (R, (D, 4 * H, H))}
    if inputs[3]:
        shapes["B"] = (arrays[inputs[3]], (D, 8 * H))
    if inputs[7]:
        shapes["P"] = (arrays[inputs[7]], (D, 3 * H))
    for label, (arr, expected) in shapes.items():
        if arr.shape != expected:
            raise ConversionError(
                f"{where}: {label} has shape {arr.shape}, expected {expected} for direction={direction!r}"
                f", hidden_size={H}, input_size={I} (from W)"
            )
    if declared_hidden is None:
        _check_initial_state(index, rec, inputs, D, H, layout)
    B = arrays[inputs[3]].astype(np.float64) if inputs[3] else np.zeros((D, 8 * H))
    P = arrays[inputs[7]].astype(np.float64) if inputs[7] else None

    options = _cell_options(where, attrs, D)
    directions = []
    for d in range(D):
        W_d, R_d = ((_reorder_gates(W[d], H), _reorder_gates(R[d], H)) if quantized is None
                    else quantized.direction(d, _GATES_FROM_ONNX))
        directions.append(DirectionSpec(
            W=W_d,
            R=R_d,
            b=_reorder_gates((B[d, : 4 * H] + B[d, 4 * H:]), H),
            peephole=None if P is None else P[d].reshape(3, H)[list(_PEEPHOLE_FROM_ONNX)].astype(np.float32),
            options=options[d],
            reverse=(direction == "reverse") or d == 1,
        ))
    return _NodeWeights(rec.name, directions, I, H, layout, None if quantized is None else quantized.note())


def _check_initial_state(index: _ModelIndex, rec: _LstmRecord, inputs: list, D: int, H: int, layout: int):
    """initial_h / initial_c must fit the node, and a constant one must be zero: a converted model starts
    from the state passed to run/step, so a non-zero constant would be lost without a word. A state
    computed from the graph's inputs is checked against the dims the graph declares for it."""
    where = f"LSTM node {rec.name!r}"
    for slot, label in ((5, "initial_h"), (6, "initial_c")):
        name = inputs[slot]
        if not name:
            continue
        try:
            value = index.fold(rec.scope, {name: f"{where} input {label}"})[name]
            dims, constant = list(value.shape), True
        except ConversionError:  # computed from inputs (a state input, or zeros of the input's batch)
            value, dims, constant = None, _static_dims(rec.scope, name), False
        if dims is None:
            continue
        d_axis = 0 if layout == 0 else 1
        if len(dims) != 3 or dims[d_axis] not in (D, None) or dims[2] not in (H, None):
            hint = ""
            if label == "initial_c" and len(dims) == 3 and dims[2] is not None and dims[2] > H:
                hint = (" (torch.onnx.export writes such a node for nn.LSTM(proj_size=...), which an ONNX LSTM "
                        "cannot express; ONNX Runtime refuses it too: convert the PyTorch weights instead)")
            layout_dims = f"({D}, batch, {H})" if layout == 0 else f"(batch, {D}, {H})"
            shown = "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"
            raise ConversionError(
                f"{where}: {label} has shape {shown}, expected {layout_dims} for its {D} direction(s) and "
                f"hidden_size={H}: the node is inconsistent{hint}"
            )
        if constant and np.any(value != 0):
            raise ConversionError(
                f"{where}: {label} is a non-zero constant; a converted model starts from the state passed to "
                f"run/step (zeros by default), so it would be lost: remove it from the model and pass it as the "
                f"initial state instead"
            )


def _reorder_gates(array: np.ndarray, H: int) -> np.ndarray:
    blocks = array.reshape((4, H) + array.shape[1:])
    return np.ascontiguousarray(blocks[list(_GATES_FROM_ONNX)].reshape(array.shape), dtype=np.float32)


def _cell_options(where: str, attrs: dict, D: int) -> list[CellOptions]:
    raw = attrs.get("activations")
    if raw is None:
        names = ["Sigmoid", "Tanh", "Tanh"] * D
    else:
        names = []
        for a in raw:
            try:
                names.append(canonical_activation(text(a)))
            except SpecError:
                raise ConversionError(
                    f"{where}: unknown activation {text(a)!r}; expected one of {', '.join(ACTIVATIONS)}"
                ) from None
        if len(names) != 3 * D:
            raise ConversionError(
                f"{where}: activations lists {len(names)} functions, expected {3 * D} (f, g, h for each "
                f"of the {D} direction(s))"
            )
    # activation_alpha / activation_beta are flat lists consumed in order (across directions) by the
    # activations that take the parameter; when they run out the defaults apply.
    alphas = list(attrs.get("activation_alpha", []))
    betas = list(attrs.get("activation_beta", []))
    resolved = []
    for slot, queue in ((0, alphas), (1, betas)):
        values = []
        for name in names:
            default = ACTIVATIONS[name][slot]  # ONNX Runtime's defaults (see spec.py)
            if default is None:
                values.append(0.0)
            else:
                values.append(float(queue.pop(0)) if queue else float(default))
        resolved.append(values)
    clip = attrs.get("clip")
    input_forget = bool(attrs.get("input_forget", 0))
    out = []
    for d in range(D):
        span = slice(3 * d, 3 * d + 3)
        try:
            opts = CellOptions.make(names[span], clip=clip, input_forget=input_forget)
        except SpecError as exc:
            raise ConversionError(f"{where}: {exc}") from None
        out.append(CellOptions(opts.activations, tuple(resolved[0][span]), tuple(resolved[1][span]),
                               opts.clip, opts.input_forget))
    return out


def _assemble(model, index, chosen, layers: list[_NodeWeights]) -> ModelSpec:
    first = layers[0]
    D = len(first.directions)
    for rec, layer in zip(chosen[1:], layers[1:], strict=True):
        if len(layer.directions) != D or layer.hidden_size != first.hidden_size:
            raise ConversionError(
                f"LSTM node {rec.name!r}: every layer of a spec needs the same hidden size and direction "
                f"count; found hidden_size={layer.hidden_size}, directions={len(layer.directions)} after "
                f"hidden_size={first.hidden_size}, directions={D}"
            )
        if layer.layout != first.layout:
            raise ConversionError(f"LSTM node {rec.name!r}: layout {layer.layout} differs from the first "
                                  f"layer's {first.layout}")
    producer = f"{model.producer_name} {model.producer_version}".strip()
    notes = onnx_quantized.unify_weight_types(layers)
    spec = ModelSpec(
        input_size=first.input_size,
        hidden_size=first.hidden_size,
        num_layers=len(layers),
        num_directions=D,
        proj_size=0,
        layers=[layer.directions for layer in layers],
        source={
            "format": "onnx",
            "node": [rec.name for rec in chosen],
            "opset": index.opset,
            "layout": first.layout,
            "producer": producer,
            "batch_first": _batch_first_input(chosen[0]),
            **notes,
        },
    )
    try:
        return spec.validate()
    except SpecError as exc:
        raise ConversionError(f"the LSTM node(s) {', '.join(r.name for r in chosen)} do not form a "
                              f"consistent model: {exc}") from None
