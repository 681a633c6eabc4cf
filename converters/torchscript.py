"""The tensors of a TorchScript archive (`torch.jit.save`: .pt / .jit), read without running anything.

A TorchScript archive is a zip holding one folder ROOT:

    ROOT/data.pkl        the module tree, pickled: objects of classes `__torch__.<module path>.<Class>`
                         whose attributes are tensors, submodules and small values
    ROOT/data/<key>      the raw bytes of each tensor storage that data.pkl refers to by key
    ROOT/code/...        the TorchScript source of every class (what torch.jit.load compiles and runs)
    ROOT/constants.pkl   tensors the code uses as constants (no names: not read here)

`torch.jit.load` would compile and run the archive's code, and `torch.load(weights_only=True)` refuses
the `__torch__` classes. This reader unpickles data.pkl with an allow-list instead: a tensor record
becomes a numpy array read from its storage (offsets, sizes and strides checked against the storage),
a `__torch__` object becomes an inert `ScriptObject` (its class name and attribute dict), and every
other global is refused with ConversionError before anything is called. Nothing from the archive is
imported, compiled or executed, and torch is not needed.

Module constants such as `batch_first` live in the class source, not in data.pkl: `ScriptObject.constants`
reads the `name : Final[type] = literal` lines of the class as text.
"""

from __future__ import annotations

import ast
import collections
import io
import pickle
import pickletools
import re
import zipfile
from pathlib import Path

import numpy as np

from fastlstm.errors import ConversionError

MAX_PICKLE_BYTES = 64 << 20  # data.pkl describes modules, not data: names and small values
MAX_CODE_BYTES = 4 << 20  # one class source file read for its constants
MAX_DEPTH = 64  # module nesting followed when naming tensors
_STORAGE_DTYPES = {
    "FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2", "BFloat16Storage": "bf16",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1", "ByteStorage": "u1",
    "BoolStorage": "?",
}
_MAX_INDEX = 1 << 40  # an offset, size or stride beyond this describes no real tensor (and overflows numpy)
_CONSTANT = re.compile(r"^\s+(\w+) : Final\[\w+\] = (.+?)\s*$", re.MULTILINE)


class ScriptObject:
    """An object of a TorchScript class, inert: `type_name` ('torch.nn.modules.rnn.LSTM') and `state`
    (the attribute dict the archive stores). Never has any behaviour of the class it stands for."""

    type_name = ""
    code_path = ""  # ROOT-relative path of the class source, e.g. code/__torch__/torch/nn/modules/rnn.py
    class_name = ""

    def __init__(self, *args):  # REDUCE calls the class: arguments are ignored
        self.state = None

    def __setstate__(self, state):  # BUILD
        self.state = state


class TorchScriptTensors(dict):
    """Dotted tensor name -> numpy array, as a state_dict would name them. `modules` maps the prefix of
    every module ('' for the root, 'encoder.lstm.' ...) to its ScriptObject; `constants` maps it to the
    module's Final constants read from the archive's source text ({} when unknown)."""

    def __init__(self, tensors: dict, modules: dict, constants: dict):
        super().__init__(tensors)
        self.modules = modules
        self.constants = constants


def is_torchscript(path: Path) -> bool:
    """A zip whose one top folder has TorchScript's code/ or constants.pkl (torch.save archives have neither)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    return any(n.count("/") >= 1 and (n.split("/", 2)[1] in ("code", "constants.pkl")) for n in names)


def read_torchscript(path: Path) -> TorchScriptTensors:
    """Every tensor attribute of the archive's module tree under its dotted name."""
    try:
        archive = zipfile.ZipFile(path)
        root, pickled = _data_pickle(archive, path)
        big_endian = _big_endian(archive, root)
        _check_opcodes(pickled)
        reader = _RestrictedUnpickler(pickled, archive, root, big_endian, path)
        tree = reader.load()
    except ConversionError:
        raise
    except _Refused as exc:
        raise ConversionError(
            f"{path}: the TorchScript archive references {exc.args[0]}, which is not part of a tensor record; "
            "fastlstm reads TorchScript archives without running any of their code and refuses everything "
            "else. Re-save the weights with torch.save(model.state_dict(), path)"
        ) from None
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError, ValueError, TypeError, KeyError,
            IndexError, AttributeError, RecursionError, MemoryError, OverflowError) as exc:
        raise ConversionError(
            f"{path}: not a readable TorchScript archive (truncated or corrupt?): {type(exc).__name__}: "
            f"{_first_line(exc)}"
        ) from None
    if not isinstance(tree, ScriptObject):
        raise ConversionError(
            f"{path}: the TorchScript archive's data.pkl holds a {type(tree).__name__}, not a module"
        )
    tensors, modules = {}, {}
    _name_tensors(tree, "", tensors, modules, set(), 0)
    with archive:
        constants = _module_constants(archive, root, modules)
    return TorchScriptTensors(tensors, modules, constants)


# ----------------------------------------------------------------------------------------- internals


class _Refused(Exception):
    """A global outside the allow-list: the qualified name."""


class _StorageType:
    def __init__(self, name: str):
        self.name = name
        self.code = _STORAGE_DTYPES[name]


class _Storage:
    """A storage's elements as a 1-D array (bfloat16 already widened to float32)."""

    def __init__(self, array: np.ndarray):
        self.array = array


def _first_line(exc) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else ""


def _data_pickle(archive: zipfile.ZipFile, path: Path) -> tuple[str, bytes]:
    entries = [i for i in archive.infolist() if i.filename.count("/") == 1 and i.filename.endswith("/data.pkl")]
    if len(entries) != 1:
        raise ConversionError(f"{path}: a TorchScript archive has one ROOT/data.pkl, found {len(entries)}")
    info = entries[0]
    if info.file_size > MAX_PICKLE_BYTES:
        raise ConversionError(f"{path}: data.pkl of {info.file_size} bytes is over the {MAX_PICKLE_BYTES}-byte "
                              "limit for a module description")
    return info.filename.split("/")[0], archive.read(info)


def _big_endian(archive: zipfile.ZipFile, root: str) -> bool:
    try:
        order = archive.read(f"{root}/byteorder")[:16].strip()
    except KeyError:
        return False  # archives before torch 1.x wrote no byteorder: little-endian
    if order not in (b"little", b"big"):
        raise ConversionError(f"byteorder record {order!r} is neither 'little' nor 'big'")
    return order == b"big"


def _check_opcodes(data: bytes) -> None:
    """Walk the pickle's opcodes before running them (pickletools reads every length against the data).
    An unpickler trusts two numbers it should not: the C one sizes its memo array by the largest index a
    PUT names (one LONG_BINPUT of 2**31: 16 GiB), the Python one allocates a BYTEARRAY8's declared length
    before reading it. After this walk both are bounded by the size of data.pkl."""
    for opcode, arg, _pos in pickletools.genops(data):
        if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT") and not 0 <= int(arg) <= len(data):
            raise ValueError(f"memo index {arg} of a {len(data)}-byte pickle")


class _RestrictedUnpickler(pickle.Unpickler):
    """pickle with an allow-list of globals: tensor records, storage types, containers, TorchScript
    objects as inert ScriptObjects. find_class is the only way a pickle reaches a callable; the data
    went through _check_opcodes first."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, root: str, big_endian: bool, path: Path):
        super().__init__(io.BytesIO(data))
        self._archive, self._root, self._big_endian, self._path = archive, root, big_endian, path
        self._storages: dict[tuple[str, str], _Storage] = {}
        self._classes: dict[tuple[str, str], type] = {}
        self._allowed = {
            ("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor,
            ("torch._utils", "_rebuild_tensor"): self._rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            ("collections", "OrderedDict"): collections.OrderedDict,
            ("torch.jit._pickle", "restore_type_tag"): _restore_type_tag,
            ("torch.jit._pickle", "build_tensorlist"): list,
            ("torch.jit._pickle", "build_intlist"): list,
            ("torch.jit._pickle", "build_doublelist"): list,
            ("torch.jit._pickle", "build_boollist"): list,
        }

    def find_class(self, module, name):
        if module == "__torch__" or module.startswith("__torch__."):
            return self._script_class(module, name)
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        allowed = self._allowed.get((module, name))
        if allowed is None:
            raise _Refused(f"{module}.{name}")
        return allowed

    def _script_class(self, module: str, name: str) -> type:
        key = (module, name)
        if key not in self._classes:
            if len(self._classes) >= 100_000:
                raise ValueError("more than 100000 TorchScript classes")
            parts = module.split(".")
            visible = ".".join(p for p in parts[1:] if not p.startswith("___torch_mangle_"))
            self._classes[key] = type("ScriptObject", (ScriptObject,), {
                "type_name": f"{visible}.{name}" if visible else name,
                "code_path": "code/" + "/".join(parts) + ".py",
                "class_name": name,
            })
        return self._classes[key]

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise ValueError(f"unexpected persistent id {str(pid)[:80]}")
        _, kind, key, _location, numel = pid
        if not isinstance(kind, _StorageType) or not isinstance(key, str) or not key.isdigit():
            raise ValueError(f"malformed storage record {str(pid)[:80]}")
        if not isinstance(numel, int) or numel < 0:
            raise ValueError(f"storage {key}: element count {numel!r} is not a count")
        cached = self._storages.get((key, kind.code))
        if cached is None:
            cached = self._storages[(key, kind.code)] = self._read_storage(key, kind, numel)
        return cached

    def _read_storage(self, key: str, kind: _StorageType, numel: int) -> _Storage:
        raw_dtype = np.dtype("<u2" if kind.code == "bf16" else kind.code)
        if self._big_endian:
            raw_dtype = raw_dtype.newbyteorder(">")
        try:
            info = self._archive.getinfo(f"{self._root}/data/{key}")
        except KeyError:
            raise ConversionError(f"{self._path}: storage {key} of the TorchScript archive is missing "
                                  "(truncated archive?)") from None
        if info.file_size < numel * raw_dtype.itemsize:
            raise ConversionError(f"{self._path}: storage {key} holds {info.file_size} bytes, fewer than its "
                                  f"{numel} {kind.name} elements need")
        with self._archive.open(info) as fh:
            data = fh.read(numel * raw_dtype.itemsize)
        array = np.frombuffer(data, dtype=raw_dtype, count=numel)
        if kind.code == "bf16":  # bfloat16 = the top half of a float32
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return _Storage(array.astype(array.dtype.newbyteorder("="), copy=False))

    def _rebuild_tensor(self, storage, offset, size, stride, *_rest):
        """A tensor record as a contiguous numpy copy; every index it implies lies inside the storage."""
        if not isinstance(storage, _Storage):
            raise ValueError("a tensor record without a storage")
        dims = (offset, *size, *stride) if isinstance(size, tuple) and isinstance(stride, tuple) else None
        if dims is None or len(size) != len(stride) or not all(type(v) is int and 0 <= v < _MAX_INDEX for v in dims):
            raise ValueError(f"malformed tensor record: offset {offset!r}, size {size!r}, stride {stride!r}")
        count = 1
        for n in size:
            count *= n
        if count == 0:
            return np.zeros(size, dtype=storage.array.dtype)
        last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if last >= storage.array.size:
            raise ConversionError(f"{self._path}: a tensor of size {list(size)} and stride {list(stride)} at offset "
                                  f"{offset} reads past its storage of {storage.array.size} elements")
        if count > 4 * storage.array.size + (1 << 20):  # only zero strides (expand) could do this
            raise ConversionError(f"{self._path}: a tensor of size {list(size)} repeats its storage of "
                                  f"{storage.array.size} elements more than 4 times")
        item = storage.array.itemsize
        view = np.lib.stride_tricks.as_strided(storage.array[offset:], shape=size,
                                               strides=tuple(s * item for s in stride), writeable=False)
        return np.array(view)


def _module_constants(archive: zipfile.ZipFile, root: str, modules: dict) -> dict:
    """prefix -> {name: literal} from the `name : Final[type] = literal` lines of each module's class."""
    sources: dict[str, str] = {}
    out = {}
    for prefix, obj in modules.items():
        if obj.code_path not in sources:
            try:
                info = archive.getinfo(f"{root}/{obj.code_path}")
                text = archive.read(info).decode("utf-8", errors="replace") if info.file_size <= MAX_CODE_BYTES else ""
            except (KeyError, OSError, zipfile.BadZipFile):
                text = ""
            sources[obj.code_path] = text
        block = re.search(rf"^class {re.escape(obj.class_name)}\(.*?(?=^class |\Z)", sources[obj.code_path],
                          re.MULTILINE | re.DOTALL)
        found = {}
        for name, literal in _CONSTANT.findall(block[0] if block else ""):
            try:
                found[name] = ast.literal_eval(literal)  # literals only: never evaluates code
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                continue
        out[prefix] = found
    return out


def _rebuild_parameter(data, *_rest):
    return data


def _restore_type_tag(value, _type_string):
    return value


def _name_tensors(obj: ScriptObject, prefix: str, tensors: dict, modules: dict, seen: set, depth: int):
    """state_dict-style names: attribute tensors of every module, submodules by dotted path."""
    if id(obj) in seen or depth > MAX_DEPTH:
        return
    seen.add(id(obj))
    modules[prefix] = obj
    state = obj.state if isinstance(obj.state, dict) else {}
    for name, value in state.items():
        if not isinstance(name, str):
            continue
        if isinstance(value, np.ndarray):
            tensors[prefix + name] = value
        elif isinstance(value, ScriptObject):
            _name_tensors(value, f"{prefix}{name}.", tensors, modules, seen, depth + 1)
