"""Whole ONNX models: the LSTM chain (onnx_import) plus the layers before and after it (onnx_layers).

`from_onnx` covers a model when every op on the way from its sequence input to its outputs is one of:
the LSTM chain, a compute op with a fastlstm layer (onnx_layers), or glue that only moves data. It then
returns the whole model (spec.pre / spec.post filled); otherwise it converts the LSTM part as before and
says, in one line (spec.source["not_covered"] and a warning), what it covered and which op it could not.

How glue is checked (no pattern list of exporter idioms): each run of glue ops between two compute ops
is evaluated on index tensors, at two different (T, B) sizes, with onnx.reference (onnx_import's bounded
folding). The values say where each row of the previous stage lands, so a run of Transpose / Reshape /
Squeeze / Gather / Slice / Concat... is accepted when it only rearranges whole rows (every row's features
stay together, in order). The rows are tracked from the graph input to the LSTM's X and from the LSTM's
outputs to the graph output, where they must be one of
    per step   (T, B) time-major or (B, T) batch-first, the same as the input; (T,) for a (T,) input
    last step  (B,) (or () for a (T,) input): each sequence's last step (y[-1]), or the final hidden
               state of each direction (h_n), which become a SelectLast layer
Parameters computed from shapes (what torch.onnx.export's dynamo exporter writes) are handled because
the glue is evaluated, not parsed. Graph inputs feeding the LSTMs' initial_h / initial_c (torch layout
(L*D, B, H)) and sequence_lens, and graph outputs that are h_n / c_n, are recognised the same way: they
are the engine's State and sequence_lens.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import onnx

from fastlstm.errors import ConversionError, SpecError
from fastlstm.layers import Embedding, SelectLast
from fastlstm.spec import ModelSpec

from . import onnx_import
from .onnx_layers import NotCovered, compute_layer, describe_node, is_glue, merge

_INT_INPUTS = {onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
               onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32,
               onnx.TensorProto.UINT64}
_EXACT = 1 << 24  # index values must stay exact in float32
# What numpy and onnx raise on values a broken file holds (a string tensor as weights, an unknown element
# type...): the whole model is then not covered, the LSTM part converts as before.
_MALFORMED = (ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError)


def from_onnx(source, node=None, lstm_only: bool = False) -> ModelSpec:
    """Convert an ONNX model into a validated ModelSpec: the whole model when every op around its LSTM
    chain is covered, else (or with lstm_only=True) the LSTM chain alone, as converters always did.

    source: a path, the file's bytes, or an onnx.ModelProto. node: None, an LSTM node name or a list of
    names forming a chain (see onnx_import.from_onnx). When the model holds layers that are not covered,
    the LSTM part is returned with spec.source["not_covered"] saying what was covered and which op was
    not (also issued as a UserWarning; the CLI prints it as one line)."""
    model = onnx_import._load(source)
    index = onnx_import._ModelIndex(model)
    if not index.lstms:
        return onnx_import.from_onnx(model)  # raises its ConversionError listing the ops found
    chosen = onnx_import._select(index, node)
    spec = onnx_import._assemble(model, index, chosen, [onnx_import._convert_node(index, rec) for rec in chosen])
    if lstm_only:
        return spec
    graph = _Graph(model, index, chosen, spec)
    if not graph.has_layers():
        return spec  # a bare LSTM graph: exactly what converters always returned
    try:
        return graph.whole_model()
    except (NotCovered, *_MALFORMED) as gap:  # a malformed graph around a good LSTM: the LSTM part, as before
        if not isinstance(gap, NotCovered):
            gap = f"cannot read the ops around the LSTM ({type(gap).__name__}: {str(gap)[:160]})"
        covered = " -> ".join(graph.covered) or "nothing around the LSTM"
        note = (f"converted the LSTM part only: the whole model is not covered (covered: {covered}; "
                f"not covered: {gap}); pass --lstm-only (lstm_only=True) to ask for the LSTM part alone")
        spec.source["not_covered"] = note
        warnings.warn(note, stacklevel=2)
        return spec


@dataclass
class _Case:
    """One test size: the sequence input's shape, and the LSTM's T and B once known."""

    shape: tuple
    T: int = 0
    B: int = 0
    rows: np.ndarray | None = None  # where each row of the current stage comes from (see _Graph)
    feeds: dict = field(default_factory=dict)


class _Graph:
    def __init__(self, model, index, chain, spec):
        self.model, self.index, self.chain, self.spec = model, index, chain, spec
        self.scope = chain[0].scope
        self.graph = self.scope.graph
        self.opset = index.opset or 1
        self.layout = int(spec.source.get("layout") or 0)
        self.covered: list[str] = []
        self.inputs = {i.name: i for i in self.graph.input if i.name not in self.scope.initializers}
        chain_nodes = {id(rec.node) for rec in chain}
        self.chain_outputs = {}  # value -> (layer, slot 0 Y | 1 Y_h | 2 Y_c)
        for l, rec in enumerate(chain):
            for slot, name in enumerate(rec.node.output[:3]):
                if name:
                    self.chain_outputs[name] = (l, slot)
        self.dynamic = self._dynamic_sources(chain_nodes)
        self.between = {id(op) for rec in chain[1:] for op in (onnx_import._data_predecessor(rec) or (0, []))[1]}

    # ---- which values depend on the data (not only on shapes) ------------------------------------------
    def _dynamic_sources(self, chain_nodes) -> dict:
        """value -> the graph inputs and chain outputs its value depends on (Shape / Size cut the
        dependence: they read only shapes). Nodes are in topological order (the ONNX rule)."""
        dyn = {name: frozenset([name]) for name in self.inputs}
        for node in self.graph.node:
            if id(node) in chain_nodes:
                for out in node.output:
                    if out:
                        dyn[out] = frozenset([out])
                continue
            if node.op_type in ("Shape", "Size"):
                continue
            names = list(node.input)
            for attr in node.attribute:
                subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
                names += [n for sub in subs for n in onnx_import._implicit_inputs(sub)]
            srcs = frozenset().union(*(dyn.get(n, frozenset()) for n in names if n))
            if srcs:
                for out in node.output:
                    if out:
                        dyn[out] = srcs
        return dyn

    def _slots(self, node) -> list[int]:
        return [k for k, name in enumerate(node.input) if name and self.dynamic.get(name)]

    def has_layers(self) -> bool:
        """Whether any op on the data path is neither an LSTM, the chain's glue, nor other glue: a graph of
        LSTM nodes (possibly with glue around them) converts as it always did, without a note."""
        for node in self.graph.node:
            if id(node) in self.between or node.op_type in ("Shape", "Size", "LSTM"):  # other chains: not layers
                continue
            slots = self._slots(node)
            if slots and not is_glue(node, slots, on_ids=True):
                return True
        return False

    # ---- the whole model ----------------------------------------------------------------------------
    def whole_model(self) -> ModelSpec:
        if self.scope.parent is not None:
            raise NotCovered("the LSTM nodes are inside a subgraph")
        first = self.chain[0].node
        seq = self._sequence_input(first.input[0])
        self.covered.append(f"input {seq!r}")
        pre_stages = self._walk_back(first.input[0], lambda v: v == seq)
        for out in self.graph.output:  # structure first: an unsupported op is named before any evaluation
            self._walk_back(out.name, lambda v: v in self.chain_outputs)
        cases = self._cases(seq, pre_stages)
        pre, batch_first, squeeze, on_ids = self._classify_pre(seq, pre_stages, cases)
        L, D = self.spec.num_layers, self.spec.num_directions
        self.covered.append(f"LSTM ({L} layer{'s' if L > 1 else ''}{', bidirectional' if D == 2 else ''})")
        roles = self._state_roles(seq, cases)
        outputs = [o.name for o in self.graph.output if o.name not in roles["state_outputs"].values()]
        if len(outputs) > 1:
            raise NotCovered(f"the model has {len(outputs)} outputs besides h_n / c_n ({', '.join(outputs)}); "
                             f"fastlstm returns one")
        post = []
        out_name = outputs[0] if outputs else None
        if out_name is not None:
            post_stages = self._walk_back(out_name, lambda v: v in self.chain_outputs)
            post = self._classify_post(post_stages, cases, batch_first, squeeze)
        spec = self.spec
        spec.pre, spec.post = pre, post
        spec.source["batch_first"] = batch_first
        dims = self.inputs[seq].type.tensor_type.shape.dim
        spec.source["model"] = {"input": seq, "input_kind": "tokens" if on_ids else "features",
                                "input_type": int(self.inputs[seq].type.tensor_type.elem_type),
                                "input_shape": [d.dim_value if d.HasField("dim_value") else None for d in dims],
                                "output": out_name, "squeeze": squeeze, **roles}
        try:
            return spec.validate()
        except SpecError as exc:
            raise NotCovered(f"the layers found do not fit together: {exc}") from None

    def _sequence_input(self, x_name: str) -> str:
        sources = self.dynamic.get(x_name, frozenset())
        if len(sources) != 1 or next(iter(sources)) not in self.inputs:
            raise NotCovered(f"the first LSTM's input does not come from one graph input (it depends on "
                             f"{', '.join(sorted(sources)) or 'constants only'})")
        return next(iter(sources))

    # ---- walking the data path backwards into stages --------------------------------------------------
    def _walk_back(self, exit_name: str, stop) -> list:
        """The stages from the sources (stop(value) true) to exit_name, in data order: ("glue", exit,
        entries, nodes) for a run of glue ops, ("compute", node, slot) for an op that should be a layer."""
        stages, cur = [], exit_name
        if stop(cur):
            return [("glue", cur, [cur], [])]
        while not stop(cur):
            node = self._producer(cur)
            slots = self._slots(node)
            if not slots:
                raise NotCovered(f"{describe_node(node)} computes {cur!r} from constants only")
            if is_glue(node, slots, on_ids=True):
                nodes, entries = self._glue_region(cur, stop)
                stages.append(("glue", cur, entries, nodes))
                if all(stop(e) for e in entries):
                    break
                if len(entries) != 1:
                    raise NotCovered(f"{describe_node(nodes[0])} combines {len(entries)} branches of the data")
                cur = entries[0]
                continue
            if len(slots) != 1:
                raise NotCovered(f"{describe_node(node)} combines {len(slots)} data inputs")
            stages.append(("compute", node, slots[0]))
            cur = node.input[slots[0]]
        return stages[::-1]

    def _producer(self, name: str):
        found = self.scope.producers.get(name)
        if found is None:
            raise NotCovered(f"the data path reads graph input {name!r}, which is not the sequence input")
        return found[0]

    def _glue_region(self, exit_name: str, stop):
        """The glue ops that compute exit_name back to the sources or to compute ops' outputs (entries)."""
        nodes, entries, stack, seen = [], [], [exit_name], set()
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            if stop(name):
                entries.append(name)
                continue
            node = self._producer(name)
            slots = self._slots(node)
            if slots and is_glue(node, slots, on_ids=True):
                nodes.append(node)
                stack.extend(node.input[k] for k in slots)
            else:
                entries.append(name)
        if any(not stop(e) for e in entries) and len(entries) > 1:
            raise NotCovered(f"{describe_node(nodes[0])} combines the data with another branch")
        return nodes, entries

    # ---- test sizes ----------------------------------------------------------------------------------------
    def _cases(self, seq: str, pre_stages) -> list[_Case]:
        ttype = self.inputs[seq].type.tensor_type
        if not ttype.HasField("shape"):
            raise NotCovered(f"input {seq!r} declares no shape")
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in ttype.shape.dim]
        tokens = ttype.elem_type in _INT_INPUTS or _starts_with_embedding(pre_stages)
        rows_rank = len(dims) if tokens else len(dims) - 1
        if rows_rank not in (1, 2):
            raise NotCovered(f"input {seq!r} has rank {len(dims)}; expected (T,) or (T, B) token ids or "
                             f"(T, F) / (T, B, F) features")
        if not tokens and dims[-1] is None:
            dims[-1] = self._first_width(pre_stages)
        picks = []
        for trial in ((3, 2), (4, 5)):
            shape = list(dims)
            for axis in range(rows_rank):
                if shape[axis] is None:
                    taken = [s for s in shape[:rows_rank] if s is not None]
                    shape[axis] = next(v for v in (trial[axis], 6, 7, 8) if v not in taken)
            if tuple(shape) not in [c.shape for c in picks]:
                picks.append(_Case(tuple(shape)))
        if rows_rank == 2 and picks[0].shape[0] == picks[0].shape[1] and picks[0].shape[0] > 1 and len(picks) == 1:
            raise NotCovered(f"input {seq!r} has the fixed shape {picks[0].shape}: cannot tell time from batch")
        dtype = onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type)
        for case in picks:
            case.feeds[seq] = np.zeros(case.shape, dtype)
        return picks

    def _first_width(self, stages) -> int:
        for stage in stages:
            if stage[0] == "compute":
                node = stage[1]
                if node.op_type in ("Gemm", "MatMul") and len(node.input) > 1:
                    w = self.index.fold(self.scope, {node.input[1]: "weight"})[node.input[1]]
                    trans = any(a.name == "transB" and a.i for a in node.attribute)
                    return int(w.shape[1] if trans else w.shape[0])
                break
        return self.spec.input_size

    # ---- before the LSTM ---------------------------------------------------------------------------------
    def _classify_pre(self, seq: str, stages, cases: list[_Case]):
        """Layers from the input to the first LSTM's X; sets each case's T and B. Returns (layers,
        batch_first, squeeze, token input)."""
        layers: list = []
        seq_dtype = cases[0].feeds[seq].dtype
        on_ids = np.issubdtype(seq_dtype, np.integer) or _starts_with_embedding(stages)
        width = None if on_ids else cases[0].shape[-1]
        for case in cases:
            rows_shape = case.shape if on_ids else case.shape[:-1]
            case.rows = np.arange(math.prod(rows_shape)).reshape(rows_shape)
        for stage in stages:
            if stage[0] == "glue":
                _, exit_name, entries, nodes = stage
                for node in nodes:
                    if not is_glue(node, self._slots(node), on_ids=on_ids and not layers):
                        raise NotCovered(f"{describe_node(node)} changes the values, not only their places")
                for case in cases:
                    feeds = dict(case.feeds)
                    ids = on_ids and not layers
                    feeds[entries[0]] = _encode(case.rows.shape, width, seq_dtype if ids else np.float32)
                    moved = self._push(exit_name, feeds)
                    case.rows = case.rows.reshape(-1)[_decode(moved, None if ids else width, case.rows.size,
                                                              describe_node(nodes[-1]) if nodes else exit_name)]
                continue
            node, slot = stage[1], stage[2]
            ids_in = on_ids and not layers
            if ids_in != (node.op_type == "Gather" and slot == 1):
                what = "token ids reach" if ids_in else "features reach an embedding lookup in"
                raise NotCovered(f"{what} {describe_node(node)}")
            item = compute_layer(self.index, self.scope, node, slot, cases[0].rows.ndim + 1, self.opset)
            merge(layers, item, width or 0, describe_node(node))
            width = layers[-1].out_features
            self.covered.append(layers[-1].describe() if not isinstance(item, tuple) else describe_node(node))
        if on_ids and not layers:
            raise NotCovered("the token ids reach the LSTM without an embedding")
        if not on_ids and any(isinstance(x, Embedding) for x in layers):
            raise NotCovered("an embedding after another layer")
        return (layers, *self._input_layout(cases, on_ids), on_ids)

    def _input_layout(self, cases, on_ids):
        """(batch_first, squeeze) from where the X rows come from; sets T and B of every case."""
        layouts = set()
        for case in cases:
            rows = case.rows if self.layout == 0 else case.rows.T  # X is (B, T, I) with layout 1
            if rows.ndim != 2:
                raise NotCovered(f"the first LSTM's input is not (T, B, features) rows (found {rows.ndim} axes)")
            T, B = rows.shape
            grid = np.arange(T * B).reshape(T, B)
            in_rank = len(case.shape) if on_ids else len(case.shape) - 1
            if in_rank == 1 and B == 1 and np.array_equal(rows[:, 0], np.arange(T)):
                layouts.add((False, True))
            elif in_rank == 2 and case.shape[:2] == (T, B) and np.array_equal(rows, grid):
                layouts.add((False, False))
            elif in_rank == 2 and case.shape[:2] == (B, T) and np.array_equal(rows, np.arange(T * B).reshape(B, T).T):
                layouts.add((True, False))
            else:
                raise NotCovered("the first LSTM reads the input's rows in an order that is neither time-major "
                                 "nor batch-first")
            case.T, case.B = T, B
        if len(layouts) != 1:
            raise NotCovered("the input layout differs between sequence sizes")
        return layouts.pop()

    # ---- after the LSTM ----------------------------------------------------------------------------------
    def _chain_feeds(self, case: _Case) -> dict:
        """Index tensors for every output of every chain node: value = row * F + feature, F = D*H. Rows:
        t*B + b for the last layer's Y, T*B + b for its Y_h (the final state), larger for the rest."""
        T, B, D, H = case.T, case.B, self.spec.num_directions, self.spec.output_size
        F, S, last = D * H, T * B, len(self.chain) - 1
        t, d, b, h = np.ogrid[:T, :D, :B, :H]
        feeds, spare = {}, S + B
        for name, (l, slot) in self.chain_outputs.items():
            if (l, slot) == (last, 0):
                value = (t * B + b) * F + d * H + h
            elif (l, slot) == (last, 1):
                value = (S + b[0]) * F + d[0] * H + h[0]
            else:
                shape = (T, D, B, H) if slot == 0 else (D, B, H)
                rows = math.prod(shape[:-1]) // D
                value = spare * F + np.arange(math.prod(shape)).reshape(shape)
                spare += rows
            if self.layout == 1:
                value = value.transpose(2, 0, 1, 3) if value.ndim == 4 else value.transpose(1, 0, 2)
            feeds[name] = value.astype(np.float32)
        if spare * F >= _EXACT:
            raise NotCovered("the model is too wide for the layout check (index values beyond 2^24)")
        return {**case.feeds, **feeds}

    def _classify_post(self, stages, cases, batch_first: bool, squeeze: bool) -> list:
        F = self.spec.num_directions * self.spec.output_size
        layers: list = []
        width = F
        for case in cases:
            case.rows = None  # None: the chain's outputs, decoded by value
        for stage in stages:
            if stage[0] == "glue":
                _, exit_name, entries, nodes = stage
                for node in nodes:
                    if not is_glue(node, self._slots(node), on_ids=False):
                        raise NotCovered(f"{describe_node(node)} changes the values, not only their places")
                for case in cases:
                    feeds = self._chain_feeds(case)
                    label = describe_node(nodes[-1]) if nodes else exit_name
                    if case.rows is None:
                        moved = self._push(exit_name, feeds)
                        case.rows = _decode(moved, F, (case.T * case.B + case.B), label)
                    else:
                        feeds[entries[0]] = _encode(case.rows.shape, width, np.float32)
                        moved = self._push(exit_name, feeds)
                        case.rows = case.rows.reshape(-1)[_decode(moved, width, case.rows.size, label)]
                continue
            node, slot = stage[1], stage[2]
            if any(c.rows is None for c in cases):
                raise NotCovered(f"{describe_node(node)} reads the LSTM's 4-D output directly")
            item = compute_layer(self.index, self.scope, node, slot, cases[0].rows.ndim + 1, self.opset)
            if isinstance(item, Embedding):
                raise NotCovered(f"{describe_node(node)} is an embedding lookup after the LSTM")
            merge(layers, item, width, describe_node(node))
            width = layers[-1].out_features
            self.covered.append(layers[-1].describe() if not isinstance(item, tuple) else describe_node(node))
        select = self._output_rows(cases, batch_first, squeeze)
        if select is not None:
            layers.insert(0, SelectLast(F, state=select and self.spec.num_directions == 2))
        return layers

    def _output_rows(self, cases, batch_first, squeeze):
        """None for per-step output; for last-step output, whether it takes the final state (True) or the
        output at the last step (False). NotCovered for any other arrangement."""
        kinds = set()
        for case in cases:
            T, B, rows = case.T, case.B, case.rows
            if rows is None:
                raise NotCovered("the graph output is the LSTM's 4-D output (T, D, B, H), not rows of features")
            S = T * B
            steps = np.arange(S).reshape(T, B)
            if squeeze and rows.shape == (T,) and np.array_equal(rows, steps[:, 0]):
                kinds.add("step")
            elif not squeeze and not batch_first and np.array_equal(rows, steps):
                kinds.add("step")
            elif not squeeze and batch_first and np.array_equal(rows, steps.T):
                kinds.add("step")
            elif rows.shape == (() if squeeze else (B,)) and np.array_equal(rows.reshape(-1), steps[-1]):
                kinds.add("last")
            elif rows.shape == (() if squeeze else (B,)) and np.array_equal(rows.reshape(-1), S + np.arange(B)):
                kinds.add("state")
            else:
                raise NotCovered(f"the output's rows (shape {rows.shape}) are neither every step "
                                 f"({'batch-first' if batch_first else 'time-major'}, as the input) nor the "
                                 f"last step of each sequence")
        if len(kinds) != 1:
            raise NotCovered("the output's rows differ between sequence sizes")
        kind = kinds.pop()
        self.covered.append({"step": "every step", "last": "last step", "state": "final state"}[kind])
        return None if kind == "step" else kind == "state"

    # ---- state and sequence_lens ---------------------------------------------------------------------
    def _state_roles(self, seq: str, cases) -> dict:
        """Which graph inputs are initial_h / initial_c / sequence_lens and which outputs are h_n / c_n."""
        L, D = self.spec.num_layers, self.spec.num_directions
        H, Hc = self.spec.output_size, self.spec.hidden_size
        state_inputs, lens_input = {}, None
        for rec_l, rec in enumerate(self.chain):
            inputs = list(rec.node.input) + [""] * 8
            for slot, key, width in ((5, "h", H), (6, "c", Hc)):
                given = self._state_input(rec_l, inputs[slot], seq, cases, L, D, width)
                if rec_l and state_inputs.get(key) != given:
                    raise NotCovered(f"the LSTM layers take their initial {key} from different places")
                state_inputs[key] = given
            lens = self._lens_input(inputs[4], cases)
            if rec_l and lens != lens_input:
                raise NotCovered("the LSTM layers take sequence_lens from different places")
            lens_input = lens
        outputs = {}
        for out in self.graph.output:
            key = self._state_output(out.name, cases, L, D, H, Hc)
            if key is not None and key not in outputs:
                outputs[key] = out.name
        return {"state_inputs": {k: v for k, v in state_inputs.items() if v},
                "state_outputs": outputs, "sequence_lens": lens_input}

    def _state_input(self, l, name, seq, cases, L, D, width):
        if not name:
            return None
        sources = self.dynamic.get(name, frozenset())
        for case in cases:
            shape = (D, case.B, width)
            if not sources:
                value = self._push(name, dict(case.feeds))
                if value.shape != (shape if self.layout == 0 else (case.B, D, width)) or np.any(value):
                    raise NotCovered(f"the initial state of the LSTM layer {l} is neither zero nor an input")
                continue
            if len(sources) != 1 or next(iter(sources)) not in self.inputs or seq in sources:
                raise NotCovered(f"the initial state of the LSTM layer {l} depends on {', '.join(sorted(sources))}")
            given = next(iter(sources))
            enc = np.arange(L * D * case.B * width, dtype=np.float32).reshape(L * D, case.B, width)
            value = self._push(name, {**case.feeds, given: enc})
            expected = enc[l * D:(l + 1) * D]
            if self.layout == 1:
                expected = expected.transpose(1, 0, 2)
            if value.shape != expected.shape or not np.array_equal(value, expected):
                raise NotCovered(f"input {given!r} is not the (layers*directions, B, H) initial state")
        return next(iter(sources)) if sources else None

    def _lens_input(self, name, cases):
        if not name:
            return None
        sources = self.dynamic.get(name, frozenset())
        if len(sources) != 1 or next(iter(sources)) not in self.inputs:
            raise NotCovered("sequence_lens of the LSTM is computed, not a graph input")
        given = next(iter(sources))
        dtype = onnx.helper.tensor_dtype_to_np_dtype(self.inputs[given].type.tensor_type.elem_type)
        for case in cases:
            lens = np.arange(1, case.B + 1).astype(dtype)
            value = self._push(name, {**case.feeds, given: lens})
            if value.shape != lens.shape or not np.array_equal(value.astype(np.int64), lens.astype(np.int64)):
                raise NotCovered(f"input {given!r} does not reach the LSTM as its sequence_lens")
        return given

    def _state_output(self, name, cases, L, D, H, Hc):
        sources = self.dynamic.get(name, frozenset())
        if not sources or any(self.chain_outputs.get(s, (0, 0))[1] == 0 for s in sources):
            return None
        found = set()
        for case in cases:
            feeds = dict(case.feeds)
            for key, slot, width in (("h", 1, H), ("c", 2, Hc)):
                enc = np.arange(L * D * case.B * width, dtype=np.float32).reshape(L * D, case.B, width)
                enc += 0.5 if key == "c" else 0.0  # h and c values never collide
                for nm, (l, s) in self.chain_outputs.items():
                    if s == slot:
                        part = enc[l * D:(l + 1) * D]
                        feeds[nm] = part if self.layout == 0 else part.transpose(1, 0, 2)
            for nm, (_, s) in self.chain_outputs.items():
                if s == 0:
                    feeds[nm] = np.zeros((case.T, D, case.B, H) if self.layout == 0 else (case.B, case.T, D, H),
                                         np.float32)
            try:
                value = self._push(name, feeds)
            except NotCovered:
                return None
            for key, width, off in (("h", H, 0.0), ("c", Hc, 0.5)):
                enc = np.arange(L * D * case.B * width, dtype=np.float32).reshape(L * D, case.B, width) + off
                if value.shape == enc.shape and np.array_equal(value, enc):
                    found.add(key)
        return found.pop() if len(found) == 1 and len(cases) else None

    # ---- evaluation ----------------------------------------------------------------------------------------
    def _push(self, name: str, feeds: dict) -> np.ndarray:
        try:
            return np.asarray(self.index.fold(self.scope, {name: f"value {name!r}"}, feeds=feeds)[name])
        except ConversionError as exc:
            raise NotCovered(f"cannot evaluate the ops computing {name!r} ({str(exc)[:200]})") from None


def _starts_with_embedding(stages) -> bool:
    for stage in stages:
        if stage[0] == "compute":
            return stage[1].op_type == "Gather" and stage[2] == 1
    return False


def _encode(rows_shape, width, dtype) -> np.ndarray:
    """Index tensor for rows of `width` features: value = position * width + feature (width None: ids,
    value = position, no feature axis)."""
    n = math.prod(rows_shape)
    if width is None:
        return np.arange(n).reshape(rows_shape).astype(dtype)
    if n * width >= _EXACT:
        raise NotCovered("the model is too wide for the layout check (index values beyond 2^24)")
    return np.arange(n * width, dtype=np.float64).reshape(*rows_shape, width).astype(dtype)


def _decode(moved: np.ndarray, width, limit: int, where: str) -> np.ndarray:
    """Positions (ints < limit) of the rows in an evaluated index tensor; NotCovered unless every row's
    features arrived whole and in order."""
    moved = np.asarray(moved)
    if not (np.issubdtype(moved.dtype, np.number)):
        raise NotCovered(f"{where} does not keep the data's values")
    if width is None:
        pos = moved
    else:
        if moved.ndim < 1 or moved.shape[-1] != width:
            raise NotCovered(f"{where} does not keep each row's {width} features on the last axis "
                             f"(found shape {moved.shape})")
        pos = moved[..., 0] / width
        if not np.array_equal(moved, pos[..., None] * width + np.arange(width)):
            raise NotCovered(f"{where} mixes features of different rows or reorders them")
    if not np.all(np.isfinite(pos)) or not np.array_equal(pos, np.floor(pos)) or (pos.size and (
            pos.min() < 0 or pos.max() >= limit)):
        raise NotCovered(f"{where} does not only move whole rows")
    return pos.astype(np.int64)

