"""Converters: ONNX and PyTorch LSTMs -> fastlstm.spec.ModelSpec (and back, for testing and benchmarks).

onnx is a core dependency, so the ONNX side is imported eagerly; the torch side imports torch lazily
inside its functions.
"""

from fastlstm.quantize import quantize

from .listing import list_lstms
from .onnx_export import to_onnx
from .onnx_graph import from_onnx
from .verify import verify

__all__ = ["from_onnx", "list_lstms", "quantize", "to_onnx", "verify"]

try:  # written separately; keep the package importable while it is absent
    from .torch_import import from_torch, to_torch
except ImportError:  # pragma: no cover
    pass
else:
    __all__ += ["from_torch", "to_torch"]
