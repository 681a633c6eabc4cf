"""fastlstm.dask: score corpora on a Dask cluster (optional extra: pip install 'fastlstm[dask]').

    import fastlstm.dask
    ys = fastlstm.dask.run("model.fastlstm", bag_of_sequences)    # lazy dask.bag / dask.array
    fastlstm.dask.score_files("model.fastlstm", ["calls/"], "scores/", client=client)

Importing this module does not import Dask; the functions do, and raise MissingExtraError (an
ImportError and a FastLSTMError) naming the pip command when it is missing. docs/scale-out.md has the
multi-machine set-up.
"""

from .batching import DEFAULT_BATCH_SIZE, run_batched
from .engines import engine_for
from .errors import ClusterError, MissingExtraError
from .lazy import run
from .scoring import ScoreSummary, score_files

__all__ = ["DEFAULT_BATCH_SIZE", "ClusterError", "MissingExtraError", "ScoreSummary", "engine_for", "run",
           "run_batched", "score_files"]
