"""Files of sequences: find them, read and check them, write their outputs atomically.

An input is a .npy holding one sequence (T, I) or N sequences of one length (N, T, I), or a .npz
whose arrays are each one of those. The output has the input's name and layout: (T, D*Hout),
(N, T, D*Hout), or a .npz with the same array names. Arrays are read with allow_pickle=False.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
from dataclasses import dataclass

import numpy as np

from ..atomic import write_atomically
from ..errors import InputError

SUFFIXES = (".npy", ".npz")


@dataclass(frozen=True)
class FileJob:
    source: str  # absolute path of the input file
    target: str  # absolute path of its output
    size: int  # input bytes (tasks are grouped by size)


def find_inputs(inputs: list[str], outdir: str) -> list[FileJob]:
    """One job per .npy/.npz file named in `inputs` or found under a directory of it (recursively, in
    sorted order; the output keeps the path relative to that directory). InputError for a missing
    path, a file of another kind, or two inputs that would write the same output."""
    outdir = os.path.abspath(outdir)
    jobs: list[FileJob] = []
    for given in inputs:
        path = os.path.abspath(given)
        try:
            st = os.stat(path)
        except OSError as exc:
            raise InputError(f"{given}: {exc.strerror or exc}") from None
        if stat.S_ISDIR(st.st_mode):
            found = sorted(_files_under(path))
            if not found:
                raise InputError(f"{given}: no .npy or .npz files in this directory")
            jobs += [FileJob(f, os.path.join(outdir, os.path.relpath(f, path)), os.path.getsize(f)) for f in found]
        elif not given.endswith(SUFFIXES):
            raise InputError(f"{given}: expected a .npy or .npz file, or a directory of them")
        elif not stat.S_ISREG(st.st_mode):
            raise InputError(f"{given}: not a regular file")
        else:
            jobs.append(FileJob(path, os.path.join(outdir, os.path.basename(path)), st.st_size))
    seen: dict[str, str] = {}
    for job in jobs:
        if job.target in seen:
            raise InputError(f"{job.source} and {seen[job.target]} would both write {job.target}; "
                             f"score them into different output directories")
        if os.path.abspath(job.target) == job.source:
            raise InputError(f"{job.source}: the output would overwrite the input; choose another -o OUTDIR")
        seen[job.target] = job.source
    return jobs


def _files_under(directory: str):
    for root, dirs, names in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            full = os.path.join(root, name)
            if name.endswith(SUFFIXES) and not name.startswith(".") and os.path.isfile(full):
                yield full


def read_input(path: str, input_size: int) -> dict[str, np.ndarray]:
    """The arrays of an input file: {"": array} for a .npy, {name: array} for a .npz; each (T, I) or
    (N, T, I) floating point with I = input_size (cast to float32 later). InputError names the file."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the worker forever
            raise InputError(f"{path}: not a regular file")
        arrays = _load_arrays(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:  # corrupt, truncated, object arrays
        raise InputError(f"{path}: not a readable {os.path.splitext(path)[1]} file ({exc})") from None
    if not arrays:
        raise InputError(f"{path}: the .npz holds no arrays")
    for name, array in arrays.items():
        where = f"{path}[{name}]" if name else path
        if not np.issubdtype(array.dtype, np.floating):
            raise InputError(f"{where}: expected floating point sequences (float32 preferred), found {array.dtype}")
        if array.ndim not in (2, 3) or array.shape[-1] != input_size:
            raise InputError(f"{where}: expected shape (T, {input_size}) or (N, T, {input_size}) (the model's "
                             f"input size is {input_size}), found {array.shape}")
    return arrays


def _load_arrays(path: str) -> dict[str, np.ndarray]:
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    return {"": np.load(path, allow_pickle=False)}


def write_output(target: str, outputs: dict[str, np.ndarray]) -> None:
    """Write one input's outputs atomically: a hidden temporary file beside `target`, renamed into place.
    A worker killed mid-write leaves only that temporary (partial_files finds it), never `target`."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    buffer = io.BytesIO()
    if target.endswith(".npz"):
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED, allowZip64=True) as npz:  # np.savez's layout
            for name, y in outputs.items():
                with npz.open(name + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, y, allow_pickle=False)
    else:
        np.lib.format.write_array(buffer, outputs[""], allow_pickle=False)
    write_atomically(target, [buffer.getbuffer()], prefix=partial_prefix(target))


def sequences_in(target: str) -> int:
    """Sequences in an output written by write_output, from its array headers (no data is read)."""
    if not target.endswith(".npz"):
        shape = np.load(target, mmap_mode="r", allow_pickle=False).shape
        return 1 if len(shape) == 2 else shape[0]
    count = 0
    with zipfile.ZipFile(target) as npz:
        for name in npz.namelist():
            with npz.open(name) as member:
                version = np.lib.format.read_magic(member)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape = read_header(member)[0]
            count += 1 if len(shape) == 2 else shape[0]
    return count


def partial_prefix(target: str) -> str:
    """Temporary files of `target` are named .NAME.part-XXXXXXXX.tmp in its directory."""
    return "." + os.path.basename(target) + ".part-"


def partial_files(target: str) -> list[str]:
    """Temporary files left beside `target` by writers that died before their rename."""
    directory, prefix = os.path.dirname(target), partial_prefix(target)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return [os.path.join(directory, n) for n in names if n.startswith(prefix) and n.endswith(".tmp")]
