"""fastlstm: Numba-accelerated CPU LSTM inference."""

from .api import get_num_threads, load, save, set_num_threads
from .engine import Engine
from .errors import (
    ConversionError,
    FastLSTMError,
    FormatError,
    InputError,
    SpecError,
    VerificationError,
)
from .spec import CellOptions, DirectionSpec, ModelSpec
from .state import State
from .streams import StreamPool

__version__ = "0.1.0"

__all__ = [
    "CellOptions",
    "Engine",
    "State",
    "StreamPool",
    "get_num_threads",
    "load",
    "save",
    "set_num_threads",
    "ConversionError",
    "DirectionSpec",
    "FastLSTMError",
    "FormatError",
    "InputError",
    "ModelSpec",
    "SpecError",
    "VerificationError",
]
