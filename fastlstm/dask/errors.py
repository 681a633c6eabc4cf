"""Errors of fastlstm.dask, and the import of its optional dependency."""

from __future__ import annotations

from ..errors import FastLSTMError

INSTALL_HINT = "pip install 'fastlstm[dask]'"


class MissingExtraError(FastLSTMError, ImportError):
    """fastlstm.dask was used without Dask installed (also an ImportError, as Python code expects)."""


class ClusterError(FastLSTMError):
    """The Dask cluster could not do the job: no scheduler at the address, no client, workers lost."""


def require_dask():
    """Import dask (bag, array) and distributed and return dask, or say how to install them."""
    try:
        import dask
        import dask.array  # noqa: F401
        import dask.bag  # noqa: F401
        import distributed  # noqa: F401
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        raise MissingExtraError(f"fastlstm.dask needs Dask and distributed ({missing} is not installed): "
                                f"{INSTALL_HINT}") from None
    return dask
