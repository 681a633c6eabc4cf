"""Bounded constant folding for the ONNX importer (onnx_import._ModelIndex.fold, the ops that compute an
LSTM's weights from initializers): onnx.reference with every node checked against limits.

Folding runs onnx.reference on ops taken from the file, so a hostile or broken model could ask it for a
tensor of any size (ConstantOfShape of [100000, 100000], Expand / Tile / Range / Pad / Resize / OneHot to
huge sizes, a chain or a Loop that doubles a value each time, a Loop that never ends). Every node the
evaluator runs goes through _guarded_run: those of the fold graph and, because onnx.reference builds the
evaluators of If / Loop / Scan bodies and of model-local functions with the class of their parent, those
inside them too.
  before a node runs: ops whose output size comes from input values or attributes (_SIZE_RULES) get that
    size, or an upper bound of it, computed from their already evaluated inputs, and are refused above
    MAX_FOLD_BYTES (products of dims are exact Python ints: no overflow); MatMul-like ops are also refused
    above MAX_FOLD_WORK multiply-adds;
  after it ran: every value it produced is measured and refused above MAX_FOLD_BYTES; the values one fold
    produces (subgraph outputs included, once per iteration) may not exceed MAX_FOLD_TOTAL_BYTES together;
  node and (sub)graph executions are counted and refused above MAX_FOLD_RUNS (a Loop that never ends).
Ops not in _SIZE_RULES produce at most a small multiple of their inputs, which the after-check bounds.
The hook is ReferenceEvaluator._init and its rt_nodes_ (onnx.reference internals, there in onnx 1.23): if an onnx
release changes them, folding refuses (ConversionError) rather than runs unchecked.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import onnx

MAX_FOLD_BYTES = 1 << 28  # one computed value: 256 MiB, e.g. a float32 W of (1, 4*4096, 4096); initializers and
#                           Constant nodes are in the file in full and never capped
MAX_FOLD_TOTAL_BYTES = 8 * MAX_FOLD_BYTES  # everything one fold computes, intermediates and iterations included
MAX_FOLD_WORK = 1 << 34  # multiply-adds of one MatMul / Gemm / Conv / Einsum / RNN node (~1.7e10: seconds)
MAX_FOLD_RUNS = 100_000  # node and (sub)graph executions of one fold
_MAX_RANK = 64  # numpy's limit: a longer shape / repeats / pads vector cannot describe a real tensor
_OBJECT_ITEMSIZE = 128  # bytes counted per element of a string tensor (onnx.reference casts to <U32)


def text(value) -> str:
    """An ONNX name or string attribute as text (bytes decoded, undecodable bytes replaced)."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class FoldLimit(Exception):
    """A folding limit was hit; fold() turns it into a ConversionError naming the weights being folded."""


class _FoldBudget:
    """The limits of one fold() call, shared by the evaluators of the fold graph and of its subgraphs."""

    def __init__(self):
        self.runs = 0
        self.total = 0

    def tick(self, where):
        self.runs += 1
        if self.runs > MAX_FOLD_RUNS:
            raise FoldLimit(f"more than {MAX_FOLD_RUNS} node and subgraph executions (MAX_FOLD_RUNS), the last "
                            f"at {_resolve(where)}: a Loop that does not end?")

    def plan(self, node, elements, itemsize, work):
        nbytes = elements * itemsize
        if nbytes > MAX_FOLD_BYTES:
            output = text(node.output[0]) if node.output else ""
            raise FoldLimit(f"{_node_label(node)} output {output!r} would hold {_count(elements)} "
                            f"elements ({_count(nbytes)} bytes), over the limit of {MAX_FOLD_BYTES} bytes per folded "
                            f"value (MAX_FOLD_BYTES)")
        if work is not None and work > MAX_FOLD_WORK:
            raise FoldLimit(f"{_node_label(node)} would take {_count(work)} multiply-adds, over the limit of "
                            f"{MAX_FOLD_WORK} per folded node (MAX_FOLD_WORK)")
        if self.total + nbytes > MAX_FOLD_TOTAL_BYTES:
            self._over_total(_node_label(node), nbytes)

    def produced(self, where, value):
        nbytes = _value_bytes(value)
        if nbytes > MAX_FOLD_BYTES:
            shape = f" of shape {value.shape}" if isinstance(value, np.ndarray) else ""
            raise FoldLimit(f"{_resolve(where)} holds {_count(nbytes)} bytes{shape}, over "
                            f"the limit of {MAX_FOLD_BYTES} bytes per folded value (MAX_FOLD_BYTES)")
        if self.total + nbytes > MAX_FOLD_TOTAL_BYTES:
            self._over_total(_resolve(where), nbytes)
        self.total += nbytes

    def _over_total(self, where, nbytes):
        raise FoldLimit(f"{where}: {_count(nbytes)} more bytes after {_count(self.total)} already computed exceed "
                        f"the limit of {MAX_FOLD_TOTAL_BYTES} bytes for one fold (MAX_FOLD_TOTAL_BYTES)")


def run_bounded(model: onnx.ModelProto, feeds: dict) -> list:
    """ReferenceEvaluator(model).run(None, feeds) with every node checked against the folding limits."""
    from onnx.reference import ReferenceEvaluator

    budget = _FoldBudget()

    class Bounded(ReferenceEvaluator):
        def _init(self):
            super()._init()
            for inst in self.rt_nodes_:
                for value in vars(inst).values():  # If / Loop / Scan bodies, function bodies
                    if isinstance(value, ReferenceEvaluator) and not isinstance(value, Bounded):
                        raise FoldLimit(
                            f"onnx {onnx.__version__} evaluates the subgraph of {_node_label(inst.onnx_node)} "
                            f"with an evaluator of another class, so its nodes cannot be checked against the "
                            f"folding limits"
                        )
                inst.run = functools.partial(_guarded_run, budget, inst, inst.run)
            self._fold_checked = True

        def run(self, *args, **kwargs):
            budget.tick("a subgraph")
            results = super().run(*args, **kwargs)
            if self is not top:  # a body's outputs are kept per iteration by Loop / Scan
                for value in results.values() if isinstance(results, dict) else results:
                    budget.produced("the outputs of a subgraph", value)
            return results

    top = Bounded(model)
    if not getattr(top, "_fold_checked", False):  # fail closed if onnx.reference stops calling _init
        raise FoldLimit(f"onnx {onnx.__version__} does not let folding check its ops against the limits")
    return top.run(None, feeds)


def _guarded_run(budget: _FoldBudget, inst, run, *args, **kwargs):
    node = inst.onnx_node
    budget.tick(lambda: _node_label(node))
    rule = _SIZE_RULES.get(node.op_type) if node.domain in ("", "ai.onnx") else None
    if rule is not None:
        try:
            planned = rule(node, _plain_attrs(node), args)
        except FoldLimit:
            raise
        except Exception as exc:  # inputs the op itself would reject: refuse rather than run it unchecked
            raise FoldLimit(f"cannot tell the output size of {_node_label(node)} before running it "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})"
                            ) from None
        budget.plan(node, *planned)
    outputs = run(*args, **kwargs)
    if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
        return outputs  # its value is in the file already, like an initializer's: not capped
    for name, value in zip(node.output, outputs or (), strict=False):
        budget.produced(lambda name=name: f"{_node_label(node)} output {name!r}", value)
    return outputs


def _resolve(where) -> str:
    """A place for a message: given as text, or as a callable that builds the text only when it is needed
    (every node run passes one, and almost none raise)."""
    return where() if callable(where) else where


def _node_label(node: onnx.NodeProto) -> str:
    name = text(node.name)
    return f"{text(node.op_type)} node {name!r}" if name else f"unnamed {text(node.op_type)} node"


def _count(n) -> str:
    if n == math.inf:
        return "unbounded"
    if n < 10**15:
        return str(int(n))
    exponent = int(math.log10(n))
    return f"~{n / 10**exponent:.2f}e{exponent}"


def _value_bytes(value) -> int:
    if isinstance(value, np.ndarray):
        return value.size * _OBJECT_ITEMSIZE if value.dtype.kind == "O" else value.nbytes
    if isinstance(value, (list, tuple)):  # sequences (may repeat one array: counted each time)
        return sum(_value_bytes(v) for v in value)
    nbytes = getattr(value, "nbytes", 0)  # numpy scalars; None, maps, sparse tensors count as 0
    return nbytes if isinstance(nbytes, int) else 0


def _plain_attrs(node: onnx.NodeProto) -> dict:
    out = {}
    for a in node.attribute:
        if a.ref_attr_name:
            continue
        try:
            out[a.name] = onnx.helper.get_attribute_value(a)
        except ValueError:
            continue
    return out


# ---- size rules: (node, attributes, input values) -> (elements, itemsize, multiply-adds or None)
# Bounds, not always exact sizes: a rule may overestimate, never underestimate. Inputs are numpy values
# (None for an omitted optional input, lists for sequences).


def _per_axis(value) -> np.ndarray:
    """A shape / repeats / pads / scales input, flat; refused when longer than any tensor's rank."""
    flat = np.asarray(value).reshape(-1)
    if flat.size > _MAX_RANK:
        raise ValueError(f"{flat.size} entries where at most {_MAX_RANK} (one per axis) make sense")
    return flat


def _ints(value) -> list[int]:
    return [int(v) for v in _per_axis(value)]


def _floats(value) -> list[float]:
    return [float(v) for v in _per_axis(value)]


def _scalar(value):
    return np.asarray(value).reshape(-1)[0].item()


def _prod(dims) -> int | float:
    dims = [max(d, 0) for d in dims]
    if 0 in dims:
        return 0
    out = 1
    for d in dims:
        out *= d
    return out


def _shape(value) -> list[int]:
    return list(np.shape(value))


def _size(value) -> int:
    return _prod(_shape(value))


def _itemsize(value) -> int:
    dtype = np.asarray(value).dtype if value is not None else np.dtype(np.float32)
    return _OBJECT_ITEMSIZE if dtype.kind == "O" else dtype.itemsize


def _ceil_dim(d, factor) -> int | float:
    product = d * factor
    return math.ceil(product) if math.isfinite(product) else math.inf


def _given(args, k):
    """Input k if present and non-empty, else None."""
    return args[k] if len(args) > k and args[k] is not None and np.size(args[k]) else None


def _axes(attrs, rank, count) -> list[int]:
    axes = [int(a) for a in attrs.get("axes", range(rank))]
    if len(axes) != count:
        raise ValueError(f"{count} values for {len(axes)} axes")
    return [a + rank if a < 0 else a for a in axes]


def _broadcast(shapes) -> list[int]:
    """Upper bound of the multidirectional broadcast of `shapes` (the largest dim per aligned axis)."""
    rank = max((len(s) for s in shapes), default=0)
    if rank > _MAX_RANK:
        raise ValueError(f"rank {rank}")
    return [max(s[len(s) - rank + k] for s in shapes if len(s) - rank + k >= 0) for k in range(rank)]


def _rule_constant_of_shape(node, attrs, args):
    value = attrs.get("value")
    itemsize = onnx.helper.tensor_dtype_to_np_dtype(value.data_type).itemsize if value is not None else 4
    return _prod(_ints(args[0])), itemsize, None


def _rule_expand(node, attrs, args):
    return _prod(_broadcast([_shape(args[0]), _ints(args[1])])), _itemsize(args[0]), None


def _rule_tile(node, attrs, args):
    return _size(args[0]) * _prod(_ints(args[1])), _itemsize(args[0]), None


def _rule_range(node, attrs, args):
    start, limit, delta = (_scalar(a) for a in args[:3])
    if delta == 0:
        return 0, 1, None  # the op itself refuses it
    if all(isinstance(v, int) for v in (start, limit, delta)):
        count = -((start - limit) // delta)  # exact ceil((limit - start) / delta)
    else:
        quotient = (limit - start) / delta
        count = math.ceil(quotient) if math.isfinite(quotient) else math.inf
    return max(count, 0), _itemsize(args[0]), None


def _rule_pad(node, attrs, args):
    shape = _shape(args[0])
    rank = len(shape)
    pads = [int(p) for p in attrs["pads"]] if "pads" in attrs else _ints(args[1])
    axes = _given(args, 3)
    axes = list(range(rank)) if axes is None else [a + rank if a < 0 else a for a in _ints(axes)]
    if len(pads) == 2 * len(axes):
        dims = list(shape)
        for j, axis in enumerate(axes):
            dims[axis] += pads[j] + pads[j + len(axes)]
    else:  # malformed (the op refuses it): bound every axis by all the padding there is
        extra = sum(p for p in pads if p > 0)
        dims = [d + extra for d in shape]
    return _prod(dims), _itemsize(args[0]), None


def _rule_resize(node, attrs, args):
    x = args[0]
    dims = _shape(x)
    if node.op_type == "Upsample":  # onnx.reference reads Resize inputs as (X, roi, scales, sizes)
        scales = _given(args, 1)
        scales, sizes = (scales if scales is not None else attrs.get("scales")), None
    else:
        scales, sizes = _given(args, 2), _given(args, 3)
    if sizes is not None:
        sizes = _ints(sizes)
        axes = _axes(attrs, len(dims), len(sizes))
        policy = text(attrs.get("keep_aspect_ratio_policy", b"stretch"))
        ratio = max((s / max(dims[a], 1) for s, a in zip(sizes, axes, strict=True)), default=1.0)
        for s, a in zip(sizes, axes, strict=True):  # other policies scale every axis by one ratio
            dims[a] = s if policy == "stretch" else max(s, _ceil_dim(dims[a], ratio))
    elif scales is not None:
        scales = _floats(scales)
        for s, a in zip(scales, _axes(attrs, len(dims), len(scales)), strict=True):
            dims[a] = _ceil_dim(dims[a], s) if s == s else math.inf  # NaN: refuse
    return _prod(dims), _itemsize(x), None


def _rule_one_hot(node, attrs, args):
    return _size(args[0]) * max(int(_scalar(args[1])), 0), _itemsize(args[2]), None


def _rule_center_crop_pad(node, attrs, args):
    dims, shape = _shape(args[0]), _ints(args[1])
    for s, a in zip(shape, _axes(attrs, len(dims), len(shape)), strict=True):
        dims[a] = s
    return _prod(dims), _itemsize(args[0]), None


def _rule_col2im(node, attrs, args):
    shape = _shape(args[0])
    return _prod(shape[:2]) * _prod(_ints(args[1])), _itemsize(args[0]), None


def _rule_max_unpool(node, attrs, args):
    out = _given(args, 2)
    if out is not None:
        return _prod(_ints(out)), _itemsize(args[0]), None
    shape = _shape(args[0])
    kernel = [int(k) for k in attrs.get("kernel_shape", [])]
    strides = [int(s) for s in attrs.get("strides", [1] * len(kernel))]
    dims = [d * s + k for d, s, k in zip(shape[2:], strides, kernel, strict=False)]
    return _prod(shape[:2] + dims), _itemsize(args[0]), None


def _rule_dft(node, attrs, args):
    length = _given(args, 1)
    return _size(args[0]) * 2 * max(int(_scalar(length)) if length is not None else 1, 1), 8, None


def _rule_stft(node, attrs, args):
    shape = _shape(args[0])
    window, frame_length = _given(args, 2), _given(args, 3)
    length = (int(_scalar(frame_length)) if frame_length is not None
              else (np.size(window) if window is not None else shape[1]))
    step = max(int(_scalar(args[1])), 1)
    frames = max(shape[1] - length, 0) // step + 1
    return shape[0] * frames * max(length, 1) * 2, 8, None


def _rule_window(node, attrs, args):
    return max(int(_scalar(args[0])), 0), 8, None


def _rule_mel_weight_matrix(node, attrs, args):
    return max(int(_scalar(args[0])), 0) * (max(int(_scalar(args[1])), 0) // 2 + 1), 8, None


def _rule_affine_grid(node, attrs, args):
    size = _ints(args[1])
    return _prod(size[:1] + size[2:]) * max(len(size) - 2, 1), _itemsize(args[0]), None


def _rule_random(node, attrs, args):
    return _prod(int(d) for d in attrs.get("shape", [])), 8, None


def _rule_multinomial(node, attrs, args):
    return _shape(args[0])[0] * max(int(attrs.get("sample_size", 1)), 0), 8, None


def _rule_tfidf(node, attrs, args):
    return _size(args[0]) * (max((int(i) for i in attrs.get("ngram_indexes", [])), default=0) + 1), 4, None


def _rule_grid_sample(node, attrs, args):
    return _prod(_shape(args[0])[:2] + _shape(args[1])[1:-1]), _itemsize(args[0]), None


def _rule_roi_align(node, attrs, args):
    height, width = int(attrs.get("output_height", 1)), int(attrs.get("output_width", 1))
    return _prod([_shape(args[1])[0], _shape(args[0])[1], height, width]), _itemsize(args[0]), None


def _rule_gather(node, attrs, args):
    shape = _shape(args[0])
    axis = int(attrs.get("axis", 0))
    del shape[axis]  # IndexError for an axis out of range: the op refuses it too
    return _prod(shape) * _size(args[1]), _itemsize(args[0]), None


def _rule_gather_nd(node, attrs, args):
    data, indices = _shape(args[0]), _shape(args[1])
    start = int(attrs.get("batch_dims", 0)) + indices[-1]
    return _prod(indices[:-1]) * _prod(data[start:]), _itemsize(args[0]), None


def _rule_concat(node, attrs, args):
    values = args[0] if node.op_type == "ConcatFromSequence" else args
    return sum(_size(v) for v in values), max((_itemsize(v) for v in values), default=1), None


def _rule_broadcast(node, attrs, args):
    present = [a for a in args if a is not None]
    return (_prod(_broadcast([_shape(a) for a in present])), max((_itemsize(a) for a in present), default=1),
            None)


def _rule_cast(node, attrs, args):
    if node.op_type == "Cast":
        target = onnx.helper.tensor_dtype_to_np_dtype(int(attrs["to"]))
    else:
        target = np.asarray(args[1]).dtype
    return _size(args[0]), _OBJECT_ITEMSIZE if target.kind == "O" else target.itemsize, None


def _rule_non_zero(node, attrs, args):
    return max(np.ndim(args[0]), 1) * _size(args[0]), 8, None


def _rule_matmul(node, attrs, args):
    a, b = (args[0], args[3]) if node.op_type == "QLinearMatMul" else (args[0], args[1])
    sa, sb = _shape(a), _shape(b)
    sa = [1] + sa if len(sa) == 1 else sa
    sb = sb + [1] if len(sb) == 1 else sb
    elements = _prod(_broadcast([sa[:-2], sb[:-2]]) + [sa[-2], sb[-1]])
    return elements, max(_itemsize(a), _itemsize(b), 4), elements * max(sa[-1], 0)


def _rule_gemm(node, attrs, args):
    (m, k), (k2, n) = _shape(args[0]), _shape(args[1])
    if attrs.get("transA", 0):
        m, k = k, m
    if attrs.get("transB", 0):
        n = k2
    return max(m, 0) * max(n, 0), max(_itemsize(args[0]), _itemsize(args[1])), max(m, 0) * max(n, 0) * max(k, 0)


def _rule_einsum(node, attrs, args):
    equation = text(attrs["equation"]).replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(args):
        raise ValueError(f"{len(terms)} terms for {len(args)} inputs")
    label_dims, ellipses, seen = {}, [], []
    for term, value in zip(terms, args, strict=True):
        shape = _shape(value)
        before, has_ellipsis, after = term.partition("...")
        if len(before) + len(after) > len(shape):
            raise ValueError(f"term {term!r} for a tensor of rank {len(shape)}")
        spans = zip(before + after, shape[: len(before)] + shape[len(shape) - len(after):], strict=True)
        for label, dim in spans:
            label_dims[label] = max(label_dims.get(label, 1), dim)
            seen.append(label)
        if has_ellipsis:
            ellipses.append(shape[len(before): len(shape) - len(after)])
    out_labels = rhs.replace("...", "") if arrow else sorted(x for x in set(seen) if seen.count(x) == 1)
    batch = _prod(_broadcast(ellipses)) if ellipses else 1
    elements = _prod(label_dims[x] for x in out_labels) * batch
    return elements, max(_itemsize(v) for v in args), _prod(label_dims.values()) * batch


def _rule_conv(node, attrs, args):
    x, w = (args[0], args[3]) if node.op_type == "QLinearConv" else (args[0], args[1])
    xs, ws = _shape(x), _shape(w)
    rank = len(xs) - 2
    pads = [int(p) for p in attrs.get("pads", [0] * 2 * rank)]
    kernel = [int(k) for k in attrs.get("kernel_shape", ws[2:])]
    if node.op_type == "ConvTranspose":
        group = int(attrs.get("group", 1))
        strides = [int(s) for s in attrs.get("strides", [1] * rank)]
        dilations = [int(d) for d in attrs.get("dilations", [1] * rank)]
        extra = [int(p) for p in attrs.get("output_padding", [0] * rank)]
        wanted = [int(s) for s in attrs.get("output_shape", [0] * rank)]
        dims = [max(s * d + e + (k - 1) * dl + 1, o)
                for d, s, e, k, dl, o in zip(xs[2:], strides, extra, kernel, dilations, wanted, strict=True)]
        return (_prod([xs[0], ws[1] * group] + dims), _itemsize(x),
                _prod(xs) * _prod(ws[1:]))
    dims = [d + pads[i] + pads[i + rank] + 1 for i, d in enumerate(xs[2:])]  # >= any stride / auto_pad result
    elements = _prod([xs[0], ws[0]] + dims)
    return elements, max(_itemsize(x), 4), elements * _prod(ws[1:2] + kernel)


def _rule_pool(node, attrs, args):
    xs = _shape(args[0])
    rank = len(xs) - 2
    pads = [int(p) for p in attrs.get("pads", [0] * 2 * rank)]
    elements = _prod(xs[:2] + [d + pads[i] + pads[i + rank] + 1 for i, d in enumerate(xs[2:])])
    return elements, 8, elements * _prod(int(k) for k in attrs.get("kernel_shape", []))


def _rule_rnn(node, attrs, args):
    xs, rs = _shape(args[0]), _shape(args[2])
    steps, batch = (xs[1], xs[0]) if attrs.get("layout", 0) else (xs[0], xs[1])
    directions, gates_h, hidden = rs[0], rs[1], rs[2]
    elements = _prod([steps, batch, directions, hidden])
    return elements, _itemsize(args[0]), _prod([steps, batch, directions, gates_h, xs[2] + hidden])


def _rule_attention(node, attrs, args):
    return _size(args[0]) * max(_shape(args[1]), default=1), 8, None  # bounds the score matrix


def _rule_linear_attention(node, attrs, args):
    q, v = _shape(args[0]), _shape(args[2])  # (B, T, Hq * dk), (B, T, Hkv * dv)
    heads = max(int(attrs.get("q_num_heads", 1)), 1)
    state = _prod([q[0], q[2], v[2]])  # >= B * Hq * dk * dv, the recurrent state
    return max(state, _prod([q[0], q[1], heads, v[2]])), 4, _prod([q[0], q[1], q[2], v[2]])


def _rule_causal_conv(node, attrs, args):
    x, w = _shape(args[0]), _shape(args[1])  # (B, C, L), (C, 1, k)
    elements = _prod([x[0], x[1], x[2] + w[2]])
    return elements, max(_itemsize(args[0]), 4), elements * max(w[2], 0)


def _longest(strings) -> int:
    return max((len(s) for s in np.asarray(strings).reshape(-1)), default=0)


def _rule_string_split(node, attrs, args):
    longest = _longest(args[0])
    parts = longest + 1 if "maxsplit" not in attrs else min(longest + 1, int(attrs["maxsplit"]) + 1)
    return _size(args[0]) * max(parts, 1), max(4 * longest, _OBJECT_ITEMSIZE), None


def _rule_string_concat(node, attrs, args):
    elements = _prod(_broadcast([_shape(args[0]), _shape(args[1])]))
    return elements, max(4 * (_longest(args[0]) + _longest(args[1])), _OBJECT_ITEMSIZE), None


def _rule_unbounded(node, attrs, args):
    raise FoldLimit(f"{_node_label(node)} is not folded: its cost is only known after running it")


_BROADCAST_OPS = ("Add", "Sub", "Mul", "Div", "Pow", "Mod", "And", "Or", "Xor", "Equal", "Greater", "Less",
                  "GreaterOrEqual", "LessOrEqual", "Max", "Min", "Sum", "Mean", "Where", "BitShift", "BitwiseAnd",
                  "BitwiseOr", "BitwiseXor", "PRelu")
_SIZE_RULES = {
    "ConstantOfShape": _rule_constant_of_shape, "Expand": _rule_expand, "Tile": _rule_tile,
    "Range": _rule_range, "Pad": _rule_pad, "Resize": _rule_resize, "Upsample": _rule_resize,
    "OneHot": _rule_one_hot, "CenterCropPad": _rule_center_crop_pad, "Col2Im": _rule_col2im,
    "MaxUnpool": _rule_max_unpool, "DFT": _rule_dft, "STFT": _rule_stft, "HannWindow": _rule_window,
    "HammingWindow": _rule_window, "BlackmanWindow": _rule_window, "MelWeightMatrix": _rule_mel_weight_matrix,
    "AffineGrid": _rule_affine_grid, "RandomNormal": _rule_random, "RandomUniform": _rule_random,
    "Multinomial": _rule_multinomial, "TfIdfVectorizer": _rule_tfidf, "GridSample": _rule_grid_sample,
    "RoiAlign": _rule_roi_align, "Gather": _rule_gather, "GatherND": _rule_gather_nd, "Concat": _rule_concat,
    "ConcatFromSequence": _rule_concat, "Cast": _rule_cast, "CastLike": _rule_cast, "NonZero": _rule_non_zero,
    "MatMul": _rule_matmul, "MatMulInteger": _rule_matmul, "QLinearMatMul": _rule_matmul, "Gemm": _rule_gemm,
    "Einsum": _rule_einsum,
    "Conv": _rule_conv, "ConvInteger": _rule_conv, "QLinearConv": _rule_conv, "DeformConv": _rule_conv,
    "ConvTranspose": _rule_conv, "MaxPool": _rule_pool, "AveragePool": _rule_pool, "LpPool": _rule_pool,
    "LSTM": _rule_rnn, "GRU": _rule_rnn, "RNN": _rule_rnn, "Attention": _rule_attention,
    "LinearAttention": _rule_linear_attention, "CausalConvWithState": _rule_causal_conv,
    "StringSplit": _rule_string_split, "StringConcat": _rule_string_concat,
    "ImageDecoder": _rule_unbounded, "RegexFullMatch": _rule_unbounded,
    **{op: _rule_broadcast for op in _BROADCAST_OPS},
}
