"""Every LSTM a model file holds, described (`fastlstm convert --list SRC`).

ONNX: each LSTM node (subgraphs of If/Loop/Scan included) by name, and the layer chain they form when
they form one. PyTorch (.pt/.pth/.bin/.ckpt, .safetensors, TorchScript archives): each nn.LSTM or
nn.LSTMCell by the prefix `--prefix` takes, in the full dotted form through nested checkpoint dicts, and
each stack of numbered cells. An entry that would not convert carries the reason instead of sizes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fastlstm.errors import ConversionError

from . import onnx_import, torch_import


@dataclass
class LstmEntry:
    option: str  # the CLI option that selects it: "--node", "--prefix", or "" (a chain: selected by default)
    name: str  # node name(s) or prefix as the user passes it
    module: str  # "ONNX LSTM", "chain of N ONNX LSTM nodes", "nn.LSTM", "nn.LSTMCell", "stack of N nn.LSTMCell"
    default: bool = False  # converted when no --node / --prefix is given
    subgraph: bool = False  # an ONNX node inside an If/Loop/Scan body
    num_layers: int | None = None
    num_directions: int | None = None
    input_size: int | None = None
    hidden_size: int | None = None
    proj_size: int | None = None
    problem: str | None = None  # why it would not convert

    def describe(self) -> str:
        sizes = self.problem and f"does not convert: {self.problem}"
        if not sizes:
            dirs = "bidirectional" if self.num_directions == 2 else "one direction"
            proj = f"projection {self.proj_size}" if self.proj_size else "no projection"
            sizes = (f"{self.num_layers} layer{'s' * (self.num_layers != 1)}, {dirs}, input {self.input_size}, "
                     f"hidden {self.hidden_size}, {proj}")
        where = " (in a subgraph)" if self.subgraph else ""
        default = " [default]" if self.default else ""
        selector = f"{self.option} {self.name!r}" if self.option else self.name
        return f"{selector}{where}: {self.module}, {sizes}{default}"


def list_lstms(source) -> list[LstmEntry]:
    """The LSTMs of a model file (path) or ONNX ModelProto. Raises ConversionError when the file cannot
    be read or holds no LSTM (the message says what it holds)."""
    if isinstance(source, (str, os.PathLike)) and not str(source).lower().endswith(".onnx") \
            and _is_torch_file(Path(source)):
        return _torch_entries(Path(source))
    return _onnx_entries(source)


def _is_torch_file(path: Path) -> bool:
    if path.suffix.lower() in (".pt", ".pth", ".bin", ".ckpt", ".jit", ".safetensors"):
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return False
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80" or torch_import._looks_like_safetensors(head)


def _onnx_entries(source) -> list[LstmEntry]:
    model = onnx_import._load(source)
    index = onnx_import._ModelIndex(model)
    if not index.lstms:
        onnx_import.from_onnx(model)  # raises the converter's own "no LSTM node ... found ops" message
    chain = onnx_import._single_chain(index) if len(index.lstms) > 1 else None
    entries = []
    for rec in index.lstms:
        entry = LstmEntry("--node", rec.name, "ONNX LSTM", default=len(index.lstms) == 1,
                          subgraph=rec.scope.parent is not None)
        try:
            layer = onnx_import._convert_node(index, rec)
            entry.num_layers, entry.num_directions, entry.proj_size = 1, len(layer.directions), 0
            entry.input_size, entry.hidden_size = layer.input_size, layer.hidden_size
        except ConversionError as exc:
            entry.problem = str(exc)
        entries.append(entry)
    if chain:
        names = " -> ".join(repr(rec.name) for rec in chain)
        entry = LstmEntry("", names, f"chain of {len(chain)} ONNX LSTM nodes", default=True,
                          subgraph=chain[0].scope.parent is not None)
        try:
            spec = onnx_import.from_onnx(model)
            _sizes(entry, spec)
        except ConversionError as exc:
            entry.problem = str(exc)
        entries.insert(0, entry)
    return entries


def _torch_entries(path: Path) -> list[LstmEntry]:
    state = torch_import._read_file(path)
    inner, container = torch_import._unwrap_checkpoint(state)
    groups = torch_import._group_lstm_tensors(inner)
    candidates = [p for p, g in groups.items() if torch_import._rnn_kind(g) == "LSTM"]
    stacks = torch_import._cell_stacks(groups)
    if not candidates:
        torch_import.from_torch(path)  # raises the converter's own "no LSTM tensors found" message
    entries = []
    for prefix in candidates + list(stacks):
        shown = f"{container}.{prefix}" if container else prefix
        entry = LstmEntry("--prefix", shown, "", default=len(candidates) == 1 and prefix in candidates)
        try:
            _, group, _, module = torch_import.find_lstm(state, shown)
            entry.module = "nn.LSTM" if module == "LSTM" else module.replace("LSTMCell", "nn.LSTMCell")
            _sizes(entry, torch_import._build_spec(group, prefix, module))
        except ConversionError as exc:
            entry.module = f"stack of {len(stacks[prefix])} nn.LSTMCell" if prefix in stacks else "nn.LSTM"
            entry.problem = str(exc)
        entries.append(entry)
    return entries


def _sizes(entry: LstmEntry, spec) -> None:
    entry.num_layers, entry.num_directions = spec.num_layers, spec.num_directions
    entry.input_size, entry.hidden_size, entry.proj_size = spec.input_size, spec.hidden_size, spec.proj_size
