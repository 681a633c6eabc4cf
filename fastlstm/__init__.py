"""fastlstm: Numba-accelerated CPU LSTM inference."""

from .errors import (
    ConversionError,
    FastLSTMError,
    FormatError,
    InputError,
    SpecError,
    VerificationError,
)
from .spec import CellOptions, DirectionSpec, ModelSpec

__version__ = "0.1.0"

__all__ = [
    "CellOptions",
    "ConversionError",
    "DirectionSpec",
    "FastLSTMError",
    "FormatError",
    "InputError",
    "ModelSpec",
    "SpecError",
    "VerificationError",
]
