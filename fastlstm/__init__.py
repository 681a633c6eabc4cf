"""fastlstm: Numba-accelerated CPU LSTM inference."""

from .errors import (
    ConversionError,
    FastLSTMError,
    FormatError,
    InputError,
    SpecError,
    VerificationError,
)
from .api import get_num_threads, load, save, set_num_threads
from .engine import Engine
from .spec import CellOptions, DirectionSpec, ModelSpec
from .state import State

__version__ = "0.1.0"

__all__ = [
    "CellOptions",
    "Engine",
    "State",
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
