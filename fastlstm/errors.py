"""Typed errors: every user-facing failure is a FastLSTMError subclass."""


class FastLSTMError(Exception):
    """Base class of every error fastlstm raises on purpose."""


class InputError(FastLSTMError, ValueError):
    """An argument to run/step/new_state has the wrong shape, dtype or value."""


class SpecError(FastLSTMError, ValueError):
    """A model spec is inconsistent (shapes contradict each other or the options)."""


class FormatError(FastLSTMError, ValueError):
    """A packed .fastlstm file is empty, truncated, tampered with or of an unknown version."""


class ConversionError(FastLSTMError, ValueError):
    """A source model (ONNX / PyTorch) cannot be turned into a fastlstm spec."""


class VerificationError(FastLSTMError):
    """`convert --verify` measured an error above tolerance against the source runtime."""
