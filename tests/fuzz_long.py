"""Long, coverage-guided fuzzing of the packed loader and the ONNX converter with atheris (not run in CI).

    pip install atheris
    python -m tests.fuzz_long packed -max_total_time=3600      # fastlstm.format.parse_spec + Engine.run
    python -m tests.fuzz_long onnx -max_total_time=3600        # converters.from_onnx(bytes)

Extra arguments go to libFuzzer (-runs=N, -max_total_time=S, -jobs=N, ...). The seed corpus is written to
a temporary directory; a crashing input is saved by libFuzzer as ./crash-<sha1>: replay it with
`python -m tests.fuzz_long packed crash-<sha1>`. The oracle is the one of tests/test_fuzz.py: a valid
result or a FastLSTMError subclass, anything else is a bug. Without atheris, scale the hypothesis tests:
`FASTLSTM_FUZZ_EXAMPLES=100000 python -m pytest tests/test_fuzz.py`.
"""

from __future__ import annotations

import inspect
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the tests' own modules (specs, ...)


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in ("packed", "onnx"):
        sys.exit("usage: python -m tests.fuzz_long {packed|onnx} [libFuzzer options or crash files]")
    try:
        import atheris
    except ImportError:
        sys.exit("atheris is not installed (pip install atheris); or run "
                 "FASTLSTM_FUZZ_EXAMPLES=100000 python -m pytest tests/test_fuzz.py")
    import test_fuzz

    # Coverage for the parsers only: instrumented numba kernels would no longer compile.
    from converters import onnx_import
    from fastlstm import format as packed
    from fastlstm import spec

    for module in (packed, spec, onnx_import):
        for obj in list(vars(module).values()):
            functions = [obj] if inspect.isfunction(obj) else []
            if inspect.isclass(obj) and obj.__module__ == module.__name__:
                functions = [f for f in vars(obj).values() if inspect.isfunction(f)]
            for f in functions:
                if f.__module__ == module.__name__:
                    atheris.instrument_func(f)
    target = argv[1]
    check = test_fuzz.check_packed if target == "packed" else test_fuzz.check_onnx
    seeds = [test_fuzz.PACKED] if target == "packed" else test_fuzz.ONNX_SEEDS
    args = [argv[0]] + argv[2:]
    if not any(not a.startswith("-") for a in argv[2:]):  # no corpus or crash file given: use the seeds
        corpus = tempfile.mkdtemp(prefix=f"fastlstm-fuzz-{target}-")
        for i, seed in enumerate(seeds):
            with open(os.path.join(corpus, f"seed{i}"), "wb") as f:
                f.write(seed)
        args.append(corpus)
    atheris.Setup(args, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
