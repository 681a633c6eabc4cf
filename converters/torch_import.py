"""PyTorch nn.LSTM <-> fastlstm ModelSpec.

`from_torch` accepts an `nn.LSTM`, any `nn.Module` holding LSTMs, a state_dict (tensors or numpy
arrays), a `.pt` / `.pth` file (read with `torch.load(weights_only=True)` only: nothing else is ever
unpickled) or a `.safetensors` file. LSTMs are found by their tensor names

    {prefix}weight_ih_l{k}[_reverse]   (4H, I_k)       input weights, gates i, f, g, o
    {prefix}weight_hh_l{k}[_reverse]   (4H, Hout)      recurrent weights
    {prefix}bias_ih_l{k}[_reverse]     (4H,)           optional (bias=False has none)
    {prefix}bias_hh_l{k}[_reverse]     (4H,)
    {prefix}weight_hr_l{k}[_reverse]   (Hout, H)       projection, only when proj_size > 0

An `nn.LSTMCell` ({prefix}weight_ih, weight_hh, bias_ih, bias_hh: no layer suffix) converts as a
one-layer, one-direction LSTM. Cells numbered under one prefix ({prefix}0., {prefix}1., ...) convert as
the layers of one stack when that prefix is asked for and their shapes chain (every cell of the same
hidden size, cell k's input = cell k-1's hidden size): the file cannot say that the model feeds cell k's
output to cell k+1 at every step, so asking for the stack is the user's claim that it does.

TorchScript archives (torch.jit.save) are read by converters/torchscript.py, which runs none of their
code: their module tree names the tensors as a state_dict would.

PyTorch's gate order is already the canonical one, so the import only sums the two biases and casts
to float32. `to_torch` goes the other way (for benchmarks and tests).

torch and safetensors are optional: both are imported lazily, only when a source needs them.
"""

from __future__ import annotations

import json
import os
import re
import struct
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fastlstm.errors import ConversionError, SpecError
from fastlstm.quantized import as_float32
from fastlstm.spec import DirectionSpec, ModelSpec

from . import torchscript

__all__ = ["from_torch", "to_torch"]

# One LSTM tensor name: optional dotted prefix, kind, layer index and optional reverse suffix (nn.LSTM) or
# neither (nn.LSTMCell, which has no weight_hr).
_NAME = re.compile(r"^(?P<prefix>(?:.*\.)?)(?:(?P<kind>weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)"
                   r"_l(?P<layer>\d+)(?P<reverse>_reverse)?|(?P<cell_kind>weight_ih|weight_hh|bias_ih|bias_hh))$")
_KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
_CELL_KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
_CELL = -1  # the layer index of an nn.LSTMCell tensor in a group: no layer suffix
_SAFETENSORS_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


# ---------------------------------------------------------------------------------------------
# public API


def from_torch(source, prefix: str | None = None, example_input=None) -> ModelSpec:
    """Convert a PyTorch LSTM into a validated ModelSpec.

    source: nn.LSTM | nn.LSTMCell | nn.Module | Mapping[str, tensor | ndarray] | path to .pt/.pth/.safetensors
            or a TorchScript archive (.pt/.jit)
    prefix: which LSTM of a larger model, e.g. "encoder.lstm" or "encoder.lstm." (None: the only one); in
            a nested checkpoint the full dotted path ("model_state.lstm.") or the one inside the unwrapped
            state dict ("lstm."); "cells." for the stack of nn.LSTMCell cells.0., cells.1., ...
    example_input: for a module that is more than an nn.LSTM, a tensor the module takes (or a tuple:
            sequence input, h0, c0): the whole model (embedding, dense head, ...) is converted through an
            in-memory ONNX export (torch_graph.py); when that is not covered, the LSTM alone, with
            spec.source["not_covered"] saying why.
    """
    if example_input is not None:
        whole, note = _whole_module(source, example_input)
        if whole is not None:
            return whole
    else:
        note = None
    info: dict = {"format": "torch", "prefix": None, "file": None}
    lstm_modules = None  # prefix -> nn.LSTM submodule (module sources only)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        info["file"] = path.name
        state = _read_file(path)
    elif isinstance(source, Mapping):
        state = source
    elif _is_torch_module(source):
        state, lstm_modules = _module_state(source)
    else:
        raise ConversionError(
            f"from_torch expects an nn.Module, a state_dict or a file path, got {type(source).__name__}"
        )

    if isinstance(state, torchscript.TorchScriptTensors):
        info["archive"] = "torchscript"
    chosen, group, container, module = find_lstm(state, prefix, None if lstm_modules is None else list(lstm_modules))
    if container:
        info["container"] = container
    info["prefix"] = chosen
    if lstm_modules is not None and chosen in lstm_modules:
        info["batch_first"] = bool(getattr(lstm_modules[chosen], "batch_first", False))
    elif isinstance(state, torchscript.TorchScriptTensors):
        flag = state.constants.get(chosen, {}).get("batch_first")
        if isinstance(flag, bool):  # a scripted nn.LSTM's source states it; a traced one's does not
            info["batch_first"] = flag
    if module != "LSTM":
        info["module"] = module
    torch = sys.modules.get("torch")
    if torch is not None and getattr(torch, "__version__", None):
        info["torch_version"] = str(torch.__version__)
    spec = _build_spec(group, chosen, module)
    spec.source = info
    if note:
        info["not_covered"] = note = f"converted the LSTM only: {note}"
        warnings.warn(note, stacklevel=2)
    try:
        return spec.validate()
    except SpecError as exc:  # _build_spec checks everything first; this is a safety net
        raise ConversionError(f"LSTM {_show(chosen)}: {exc}") from None


def _whole_module(source, example_input):
    """(whole-model spec, None) or (None, why not); ConversionError when the source cannot be a whole model."""
    if not _is_torch_module(source):
        raise ConversionError(
            f"example_input needs the nn.Module itself: a {type(source).__name__} (a state_dict or a weights "
            f"file) holds the weights but not the model's topology (the code that runs between the layers); "
            f"pass the module, or export it to ONNX and convert that"
        )
    import torch

    if isinstance(source, torch.nn.LSTM):
        return None, None  # a bare LSTM: the direct path below
    from .torch_graph import from_module

    return from_module(source, example_input)


def to_torch(spec: ModelSpec):
    """Build a float32 `torch.nn.LSTM` (batch_first=False, eval mode) holding the spec's weights.

    The summed bias goes into bias_ih; bias_hh is zero. Raises ConversionError for what nn.LSTM
    cannot express: peepholes, non-default activations, clip, input_forget, a lone reverse direction.
    """
    torch = _import_torch("to_torch")
    spec.validate()
    for l, layer in enumerate(spec.layers):
        for d, ds in enumerate(layer):
            where = f"layer {l} direction {d}"
            if ds.peephole is not None:
                raise ConversionError(f"{where}: PyTorch's nn.LSTM has no peephole connections")
            opts = ds.options
            if not opts.is_default:
                raise ConversionError(
                    f"{where}: PyTorch's nn.LSTM only has the default cell (Sigmoid, Tanh, Tanh, no clip, "
                    f"no input_forget); found activations={list(opts.activations)}, clip={opts.clip}, "
                    f"input_forget={opts.input_forget}"
                )
            if spec.num_directions == 1 and getattr(ds, "reverse", False):
                raise ConversionError(
                    f"{where}: a single reverse direction (ONNX direction='reverse') has no nn.LSTM "
                    "equivalent; nn.LSTM runs forward or bidirectional"
                )
    lstm = torch.nn.LSTM(
        input_size=spec.input_size,
        hidden_size=spec.hidden_size,
        num_layers=spec.num_layers,
        bias=True,
        batch_first=False,
        bidirectional=spec.num_directions == 2,
        proj_size=spec.proj_size,
    )
    with torch.no_grad():
        for l, layer in enumerate(spec.layers):
            for d, ds in enumerate(layer):
                sfx = f"_l{l}" + ("_reverse" if d == 1 else "")
                getattr(lstm, "weight_ih" + sfx).copy_(torch.from_numpy(as_float32(ds.W)))  # quantized: float32
                getattr(lstm, "weight_hh" + sfx).copy_(torch.from_numpy(as_float32(ds.R)))
                getattr(lstm, "bias_ih" + sfx).copy_(torch.from_numpy(ds.b))
                getattr(lstm, "bias_hh" + sfx).zero_()
                if spec.proj_size:
                    getattr(lstm, "weight_hr" + sfx).copy_(torch.from_numpy(ds.proj))
    return lstm.eval()


# ---------------------------------------------------------------------------------------------
# sources -> flat mapping name -> tensor/array


def _import_torch(what: str):
    try:
        import torch
    except ImportError:
        raise ConversionError(f"{what} needs PyTorch, which is not installed (pip install torch)") from None
    return torch


def _is_torch_module(obj) -> bool:
    torch = sys.modules.get("torch")  # a module can only exist if torch is already imported
    return torch is not None and isinstance(obj, torch.nn.Module)


def _module_state(module):
    """The LSTM tensors of a module + its nn.LSTM submodules by prefix ('' = the module itself).

    Tensors are read as the LSTMs' attributes, not only from state_dict(), so weights behind a
    parametrization (weight_norm, ...) come out as the effective matrices. The dict of LSTMs is None
    when there is none (a custom module: fall back to tensor names)."""
    import torch

    lstms = {f"{name}." if name else "": sub for name, sub in module.named_modules()
             if isinstance(sub, (torch.nn.LSTM, torch.nn.LSTMCell))}
    state = dict(module.state_dict())
    with torch.no_grad():
        for prefix, lstm in lstms.items():
            if isinstance(lstm, torch.nn.LSTMCell):
                for kind in _CELL_KINDS:
                    value = getattr(lstm, kind, None)
                    if isinstance(value, torch.Tensor):
                        state[f"{prefix}{kind}"] = value.detach()
                continue
            for l in range(lstm.num_layers):
                for sfx in ("", "_reverse") if lstm.bidirectional else ("",):
                    for kind in _KINDS:
                        value = getattr(lstm, f"{kind}_l{l}{sfx}", None)
                        if isinstance(value, torch.Tensor):
                            state[f"{prefix}{kind}_l{l}{sfx}"] = value.detach()
    return state, lstms or None


def _read_file(path: Path) -> Mapping:
    if not path.exists():
        raise ConversionError(f"{path}: no such file")
    if not path.is_file():
        raise ConversionError(f"{path}: not a file")
    with open(path, "rb") as fh:
        head = fh.read(16)
    if not head:
        raise ConversionError(f"{path}: the file is empty")
    if path.suffix.lower() == ".safetensors" or _looks_like_safetensors(head):
        return _read_safetensors(path)
    if path.suffix.lower() == ".onnx":
        raise ConversionError(f"{path}: this is an ONNX model; convert it with from_onnx")
    # Modern torch.save writes a zip archive; the legacy format is a pickle stream (protocol 2).
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise ConversionError(
            f"{path}: not a PyTorch file (expected a torch.save zip archive or a .safetensors file; "
            f"the file starts with {head[:8]!r})"
        )
    if head.startswith(b"PK\x03\x04") and torchscript.is_torchscript(path):
        return torchscript.read_torchscript(path)  # never torch.jit.load: that runs the archive's code
    return _read_torch_file(path)


def _read_torch_file(path: Path) -> Mapping:
    torch = _import_torch(f"reading {path.name}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, KeyError, ...
        text = str(exc)
        culprit = re.search(r"(?:GLOBAL|[Uu]nsupported class)\s+([\w.]+)", text)
        if culprit:
            raise ConversionError(
                f"{path}: the file holds Python objects, not only tensors (it references {culprit[1]}); "
                "fastlstm reads .pt files with torch.load(weights_only=True) and never unpickles "
                "arbitrary objects. Re-save the weights with torch.save(model.state_dict(), path)"
            ) from None
        detail = _first_line(text.split("WeightsUnpickler error:")[-1])[:200] or type(exc).__name__
        refused = " torch.load(weights_only=True) refused it:" if "weights" in text.lower() else ""
        raise ConversionError(
            f"{path}: not a readable PyTorch file (truncated or corrupt?):{refused} {detail}"
        ) from None
    if _is_torch_module(obj):  # only reachable if a future weights_only allow-lists modules
        return obj.state_dict()
    if not isinstance(obj, Mapping):
        raise ConversionError(
            f"{path}: expected a state_dict (a dict of tensors), found {type(obj).__name__}"
        )
    return obj


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _looks_like_safetensors(head: bytes) -> bool:
    return len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < (1 << 30)


def _read_safetensors(path: Path) -> Mapping:
    """With the safetensors package (and torch: numpy has no bfloat16) when installed, else own parser."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        return _parse_safetensors(path)
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError, OSError, ...
        raise ConversionError(f"{path}: not a readable safetensors file: {exc}") from None


def _parse_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Minimal safetensors reader: u64 LE header length, JSON header, raw little-endian data."""
    data = path.read_bytes()
    if len(data) < 8:
        raise ConversionError(f"{path}: not a safetensors file ({len(data)} bytes, need an 8-byte header)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ConversionError(f"{path}: truncated safetensors file (header of {n} bytes, file {len(data)})")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"{path}: not a safetensors file (header is not JSON: {exc})") from None
    if not isinstance(header, dict):
        raise ConversionError(f"{path}: not a safetensors file (header is not a JSON object)")
    body = memoryview(data)[8 + n:]
    out: dict[str, np.ndarray] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype_name, shape, (start, end) = entry["dtype"], list(entry["shape"]), entry["data_offsets"]
            dtype = _SAFETENSORS_DTYPES[dtype_name]
        except (KeyError, TypeError, ValueError):
            raise ConversionError(
                f"{path}: tensor {name!r} has a malformed or unsupported entry {entry}"
            ) from None
        count = int(np.prod(shape, dtype=np.int64))
        if not 0 <= start <= end <= len(body) or end - start != count * dtype.itemsize:
            raise ConversionError(
                f"{path}: tensor {name!r} ({dtype_name} {shape}) has data offsets {start}..{end} that do "
                f"not fit its size or the file (data section of {len(body)} bytes; truncated?)"
            )
        arr = np.frombuffer(body[start:end], dtype=dtype).reshape(shape)
        if dtype_name == "BF16":  # bfloat16 = the top half of a float32
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = arr
    return out


def _unwrap_checkpoint(state: Mapping) -> tuple[Mapping, str | None]:
    """A checkpoint may nest the state_dict ({"epoch": 3, "state_dict": {...}}). Unwrap it when one
    nested mapping holds all the LSTM tensors; when several do, flatten with dotted names so that a
    prefix such as "model.lstm." can choose."""
    if any(isinstance(k, str) and _NAME.match(k) for k in state):
        return state, None
    holders = {}
    for key, value in state.items():
        if isinstance(key, str) and isinstance(value, Mapping):
            inner, inner_key = _unwrap_checkpoint(value)
            if any(isinstance(k, str) and _NAME.match(k) for k in inner):
                holders[key if inner_key is None else f"{key}.{inner_key}"] = inner
    if len(holders) == 1:
        (key, inner), = holders.items()
        return inner, key
    if len(holders) > 1:  # e.g. "model" and "ema_model": every one stays reachable by its dotted prefix
        flat = {}
        for key, inner in holders.items():
            flat.update({f"{key}.{name}": value for name, value in inner.items() if isinstance(name, str)})
        return flat, None
    return state, None


# ---------------------------------------------------------------------------------------------
# tensor names -> LSTM groups -> spec


def find_lstm(state: Mapping, prefix: str | None, lstm_prefixes: list[str] | None = None):
    """-> (prefix chosen, its tensors {(kind, layer, direction): tensor}, the checkpoint key unwrapped or
    None, "LSTM" | "LSTMCell" | "stack of N LSTMCell"). Cells come out as layers 0..N-1."""
    state, container = _unwrap_checkpoint(state)
    groups = _group_lstm_tensors(state)
    stacks = _cell_stacks(groups)
    chosen = _choose_group(groups, stacks, prefix, lstm_prefixes, container)
    if chosen in stacks:
        merged = {(kind, k, d): value for k, child in enumerate(stacks[chosen])
                  for (kind, _, d), value in groups[child].items()}
        return chosen, merged, container, f"stack of {len(stacks[chosen])} LSTMCell"
    group = groups[chosen]
    if any(layer == _CELL for _, layer, _ in group):
        if any(layer != _CELL for _, layer, _ in group):
            raise ConversionError(f"LSTM {_show(chosen)} mixes nn.LSTM names (weight_ih_l0, ...) with nn.LSTMCell "
                                  "names (weight_ih, ...): one prefix holds one module")
        return chosen, {(kind, 0, d): value for (kind, _, d), value in group.items()}, container, "LSTMCell"
    return chosen, group, container, "LSTM"


def _group_lstm_tensors(state: Mapping) -> dict[str, dict[tuple[str, int, int], object]]:
    """prefix -> {(kind, layer, direction): tensor} for every name that looks like an LSTM tensor
    (layer _CELL for an nn.LSTMCell name)."""
    groups: dict[str, dict] = {}
    for name, value in state.items():
        if not isinstance(name, str):
            continue
        m = _NAME.match(name)
        if m is None:
            continue
        if m["cell_kind"]:
            key = (m["cell_kind"], _CELL, 0)
        else:
            key = (m["kind"], int(m["layer"]), 1 if m["reverse"] else 0)
        groups.setdefault(m["prefix"], {})[key] = value
    return groups


def _cell_stacks(groups: dict) -> dict[str, list[str]]:
    """parent prefix -> [parent0., parent1., ...] for cells numbered 0..N-1 (N >= 2) under one parent."""
    numbered: dict[str, dict[int, str]] = {}
    for prefix, group in groups.items():
        m = re.match(r"^(.*?)(\d+)\.$", prefix)
        if m and group and all(layer == _CELL for _, layer, _ in group) and _rnn_kind(group) == "LSTM":
            numbered.setdefault(m[1], {})[int(m[2])] = prefix
    return {parent: [found[k] for k in range(len(found))] for parent, found in numbered.items()
            if len(found) >= 2 and sorted(found) == list(range(len(found))) and parent not in groups}


def _rnn_kind(group: dict) -> str:
    """'LSTM' unless weight_hh_l0 (weight_hh of a cell) has the row count of a GRU (3H) or a plain RNN (H)."""
    w = group.get(("weight_hh", 0, 0), group.get(("weight_hh", _CELL, 0)))
    shape = getattr(w, "shape", None)
    if shape is None or len(shape) != 2 or ("weight_hr", 0, 0) in group:
        return "LSTM"
    rows, cols = shape
    if rows == 3 * cols:
        return "GRU"
    if rows == cols:
        return "RNN"
    return "LSTM"


def _show(prefix: str) -> str:
    return repr(prefix) if prefix else "'' (top level)"


def _choose_group(groups: dict, stacks: dict, prefix: str | None, lstm_prefixes: list[str] | None,
                  container: str | None = None) -> str:
    if lstm_prefixes is not None:  # a module: trust its own nn.LSTM / nn.LSTMCell submodules
        candidates = [p for p in lstm_prefixes if p in groups]
    else:
        candidates = [p for p, g in groups.items() if _rnn_kind(g) == "LSTM"]
    others = sorted(p for p in groups if p not in candidates)
    if prefix is not None:
        if not isinstance(prefix, str):
            raise ConversionError(f"prefix must be a string, got {type(prefix).__name__}")
        want = prefix if prefix == "" or prefix.endswith(".") else prefix + "."
        wants = [want]
        if container and want.startswith(container + "."):  # the full path through the checkpoint's dicts
            wants.append(want[len(container) + 1:])
        for option in wants:
            if option in candidates or option in stacks:
                return option
        for option in wants:
            if option in groups:
                raise ConversionError(
                    f"prefix {_show(option)} holds {_rnn_kind(groups[option])}-shaped weights, not an LSTM; "
                    f"LSTMs found: {_listed(candidates, stacks, container)}"
                )
        raise ConversionError(
            f"no LSTM with prefix {_show(want)}; available: {_listed(candidates, stacks, container)}"
        )
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        extra = ""
        if others:
            extra = f" (found only GRU/RNN-shaped weights under {', '.join(map(_show, others))})"
        raise ConversionError(
            "no LSTM tensors found: expected names like 'weight_ih_l0', 'weight_hh_l0' (nn.LSTM) or "
            f"'weight_ih', 'weight_hh' (nn.LSTMCell), optionally under a prefix such as 'lstm.'{extra}"
        )
    raise ConversionError(
        f"found {len(candidates)} LSTMs; choose one with prefix= (CLI: --prefix P; fastlstm convert --list SRC "
        f"describes each): {_listed(candidates, stacks, container)}"
    )


def _listed(candidates: list[str], stacks: dict, container: str | None) -> str:
    """The prefixes a user may pass, in the full form through the checkpoint's dicts when there is one."""
    shown = [_show(f"{container}.{p}" if container else p) for p in candidates]
    shown += [f"{_show(f'{container}.{p}' if container else p)} (the {len(stacks[p])} cells as layers)"
              for p in stacks]
    return ", ".join(shown) or "none"


def _to_numpy(value, what: str) -> np.ndarray:
    """A tensor or array as a float array (dtype kept, bf16 widened); non-float is an error."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise ConversionError(f"{what}: expected a floating point tensor, found {value.dtype}")
        value = value.detach().to("cpu")
        if value.dtype not in (torch.float32, torch.float64, torch.float16):
            value = value.to(torch.float32)  # bfloat16 and friends: numpy cannot hold them
        return value.numpy()
    if isinstance(value, np.ndarray):
        if not np.issubdtype(value.dtype, np.floating):
            raise ConversionError(f"{what}: expected a floating point array, found {value.dtype}")
        return value
    raise ConversionError(f"{what}: expected a tensor or array, found {type(value).__name__}")


def _build_spec(group: dict, prefix: str, module: str = "LSTM") -> ModelSpec:
    def name(kind, l, d):  # the tensor's name in the source, for messages
        if module == "LSTMCell":
            return f"{prefix}{kind}"
        if module != "LSTM":  # a stack of cells
            return f"{prefix}{l}.{kind}"
        return f"{prefix}{kind}_l{l}{'_reverse' if d else ''}"

    tensors = {key: _to_numpy(v, name(*key)) for key, v in group.items()}
    layers = sorted({l for _, l, _ in tensors})
    L = layers[-1] + 1
    if layers != list(range(L)):
        missing = sorted(set(range(L)) - set(layers))
        raise ConversionError(
            f"LSTM {_show(prefix)}: tensors for layers {layers} but none for layer(s) {missing}"
        )
    D = 2 if any(d for _, _, d in tensors) else 1
    has_bias = any(k.startswith("bias") for k, _, _ in tensors)
    has_proj = any(k == "weight_hr" for k, _, _ in tensors)
    required = ["weight_ih", "weight_hh"] + ["bias_ih", "bias_hh"] * has_bias + ["weight_hr"] * has_proj
    for l in range(L):
        for d in range(D):
            for kind in required:
                if (kind, l, d) not in tensors:
                    present = [name(k, l, d) for k in _KINDS if (k, l, d) in tensors]
                    why = {
                        "bias_ih": "other directions/layers have biases",
                        "bias_hh": "other directions/layers have biases",
                        "weight_hr": "other directions/layers have a projection (proj_size)",
                        "weight_ih": "every layer needs input weights",
                        "weight_hh": "every layer needs recurrent weights",
                    }[kind]
                    raise ConversionError(
                        f"LSTM {_show(prefix)}: missing tensor {name(kind, l, d)} ({why}); "
                        f"found {present or 'nothing'} for layer {l}{' reverse' if d else ''}"
                    )
    for key, arr in tensors.items():
        ndim = 1 if key[0].startswith("bias") else 2
        if arr.ndim != ndim:
            raise ConversionError(f"{name(*key)}: expected a {ndim}-D tensor, found shape {tuple(arr.shape)}")

    rows, Hout = tensors[("weight_hh", 0, 0)].shape
    if rows % 4 or rows == 0:
        raise ConversionError(
            f"{name('weight_hh', 0, 0)}: expected 4*hidden_size rows (gates i, f, g, o), "
            f"found shape {(rows, Hout)}"
        )
    H = rows // 4
    if has_proj:
        proj_size = Hout
        if Hout >= H:
            raise ConversionError(
                f"{name('weight_hr', 0, 0)}: PyTorch requires proj_size < hidden_size, found proj_size="
                f"{Hout} with hidden_size={H} (from weight_hh rows {rows} = 4*{H})"
            )
    else:
        proj_size = 0
        if Hout != H:
            raise ConversionError(
                f"{name('weight_hh', 0, 0)}: expected shape ({4 * H}, {H}) = (4*hidden_size, hidden_size) "
                f"without a projection, found {(rows, Hout)}"
            )
    I = tensors[("weight_ih", 0, 0)].shape[1]
    for l in range(L):
        I_l = I if l == 0 else D * Hout
        expected = {"weight_ih": (4 * H, I_l), "weight_hh": (4 * H, Hout), "bias_ih": (4 * H,),
                    "bias_hh": (4 * H,), "weight_hr": (Hout, H)}
        for d in range(D):
            for kind in required:
                shape = tuple(tensors[(kind, l, d)].shape)
                if shape != expected[kind]:
                    why = ""
                    if kind == "weight_ih" and l > 0 and shape[0] == 4 * H:
                        why = (f"; layer {l} takes the previous layer's output of "
                               f"{D} direction(s) x {Hout} = {D * Hout}")
                    raise ConversionError(
                        f"{name(kind, l, d)}: expected shape {expected[kind]} (hidden_size={H}, "
                        f"proj_size={proj_size}, input_size={I}), found {shape}{why}"
                    )

    def f32(kind, l, d):
        return np.array(tensors[(kind, l, d)], dtype=np.float32, order="C")  # a copy, never a view

    spec_layers = []
    for l in range(L):
        directions = []
        for d in range(D):
            b = np.zeros(4 * H, dtype=np.float32)
            if has_bias:  # sum in float64, round once
                b = (tensors[("bias_ih", l, d)].astype(np.float64)
                     + tensors[("bias_hh", l, d)].astype(np.float64)).astype(np.float32)
            directions.append(DirectionSpec(
                W=f32("weight_ih", l, d),
                R=f32("weight_hh", l, d),
                b=b,
                proj=f32("weight_hr", l, d) if has_proj else None,
                reverse=bool(d),
            ))
        spec_layers.append(directions)
    return ModelSpec(
        input_size=int(I), hidden_size=int(H), num_layers=int(L), num_directions=D,
        proj_size=int(proj_size), layers=spec_layers,
    )
