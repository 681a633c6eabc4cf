"""The `fastlstm` command: convert, info, demo, warmup, bench, score.

Every failure prints exactly one line on stderr and no traceback (--debug shows the traceback). While
convert and info run, third-party warnings and library log lines are held back (cli_capture): a failure's
line says how many there were and --debug shows them.
    exit 1  user error: a FastLSTMError (bad model file, failed conversion or verification) or an OSError
    exit 2  usage error: bad command line arguments
    exit 3  internal error: any other exception, i.e. a bug in fastlstm (please report it)
    exit 130  interrupted (Ctrl-C)
Files are written atomically (temporary file + rename), so a failure never leaves a partial output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .cli_capture import Capture
from .errors import FastLSTMError

EXIT_USER_ERROR = 1
EXIT_USAGE_ERROR = 2
EXIT_INTERNAL_ERROR = 3


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (the full usage is behind --help)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE_ERROR, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def _one_line(text: str) -> str:
    """First line of a message, with control characters escaped (messages may quote untrusted files)."""
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    line = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in line)
    return line if len(line) <= 1000 else line[:997] + "..."


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastlstm", description="Fast CPU LSTM inference.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    convert = commands.add_parser("convert", help="convert an ONNX or PyTorch LSTM into a .fastlstm file")
    convert.add_argument("src", help="model.onnx, weights.pt/.pth, weights.safetensors or a TorchScript .pt/.jit")
    convert.add_argument("-o", "--output", metavar="DST", help="the .fastlstm file to write (required unless --list)")
    convert.add_argument("--list", action="store_true",
                         help="print every LSTM in SRC (ONNX node names or PyTorch prefixes, sizes); write nothing")
    convert.add_argument("--node", help="ONNX: name of the LSTM node (default: the only one / the chain)")
    convert.add_argument("--prefix", help="PyTorch: state_dict prefix of the LSTM (default: the only one)")
    convert.add_argument("--verify", action="store_true",
                         help="run the source runtime on random input, store the error, fail above tolerance")
    convert.add_argument("--weights", choices=["fp32", "fp16", "bf16", "int8"],
                         help="store W and R as fp16, bf16 or int8 (per gate row); default: the source's")
    convert.add_argument("--lstm-only", action="store_true",
                         help="ONNX: convert the LSTM node(s) alone, not the layers around them")

    info = commands.add_parser("info", help="describe a .fastlstm file")
    info.add_argument("file")
    info.add_argument("--json", action="store_true", help="print the metadata as JSON")

    commands.add_parser("demo", help="build, convert, verify and time a built-in model (no files needed)")

    warm = commands.add_parser("warmup", help="compile the kernels into the cache ahead of first use "
                                              "(for a deployment image)")
    warm.add_argument("--default-only", action="store_true",
                      help="only the default-cell kernels (skip the general cell: clip, peepholes, other activations)")
    warm.add_argument("--weights", type=_weight_list, default=["fp32"],
                      help="weight types to compile for, comma separated: fp32, int8, fp16, bf16 (default fp32; "
                           "each type is its own set of kernels)")

    bench = commands.add_parser("bench", help="benchmark fastlstm against ONNX Runtime and PyTorch")
    bench.add_argument("--quick", action="store_true", help="a small sweep (< 3 minutes)")
    bench.add_argument("--out", default="bench-out", help="directory for report.md, results.json, plots")
    bench.add_argument("--sizes", type=_int_list, help="hidden sizes, comma separated (e.g. 64,256)")
    bench.add_argument("--threads", type=_int_list, help="thread counts, comma separated (e.g. 1,2)")
    bench.add_argument("--batch", type=_int_list, help="batch sizes for batched run (e.g. 16,64)")
    bench.add_argument("--step-batch", type=_int_list,
                       help="batch sizes for batched step (default 1,4,16,64)")
    bench.add_argument("--weights", type=_weight_list,
                       help="weight types, comma separated: fp32 plus any of int8, fp16, bf16 (each engine's path "
                            "at that type; default all, --quick fp32,int8 at 1 thread)")

    score = commands.add_parser("score", help="score .npy/.npz files on a Dask cluster (pip install "
                                "'fastlstm[dask]'); resumable: a rerun skips finished outputs")
    score.add_argument("model", help="the .fastlstm file (at the same path on every worker)")
    score.add_argument("inputs", nargs="+", metavar="INPUT", help=".npy/.npz files or directories of them")
    score.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="one output per input goes here")
    score.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler (default: a local cluster)")
    score.add_argument("--workers", type=int, metavar="N",
                       help="local cluster: worker processes (default: one per core); with --scheduler: wait "
                            "for N workers")
    score.add_argument("--batch-size", type=int, default=32, metavar="B", help="rows per engine call")
    score.add_argument("--threads", type=int, default=1, metavar="T",
                       help="kernel threads per worker (default 1; see docs/scale-out.md)")
    return parser


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _weight_list(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    known = ("fp32", "int8", "fp16", "bf16")
    if not values or any(v not in known for v in values):
        raise argparse.ArgumentTypeError(f"expected weight types from {', '.join(known)}, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "convert" and not args.list and not args.output:
        parser.error("convert needs -o DST (or --list)")
    held = Capture(enabled=args.command in ("convert", "info") and not args.debug)
    notes: list[str] = []  # our own stderr lines, printed once the capture has given stderr back
    try:
        with held:
            status = _dispatch(args, notes)
        for note in notes:
            print(note, file=sys.stderr)
        return status
    except (FastLSTMError, OSError) as exc:
        if args.debug:
            raise
        print(f"fastlstm {args.command}: error: {_one_line(exc) or type(exc).__name__}{held.summary()}",
              file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("fastlstm: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not the user's fault: still one line, the traceback is behind --debug
        if args.debug:
            raise
        print(f"fastlstm {args.command}: internal error: {type(exc).__name__}: {_one_line(exc)} "
              f"(this is a bug in fastlstm; rerun with --debug for the traceback){held.summary()}", file=sys.stderr)
        return EXIT_INTERNAL_ERROR


def _dispatch(args, notes: list[str]) -> int:
    if args.command == "convert" and args.list:
        from .cli_convert import list_file

        print(list_file(args.src))
        return 0
    if args.command == "convert":
        from .cli_convert import convert_file

        report = convert_file(args.src, args.output, node=args.node, prefix=args.prefix, verify=args.verify,
                              weights=args.weights, lstm_only=args.lstm_only)
        if report.get("note"):  # the whole model was not covered: one line, what was and the first op that was not
            notes.append(f"fastlstm convert: note: {_one_line(report['note'])}")
        print(f"wrote {args.output}: {report['summary']}")
        if "verify" in report:
            v = report["verify"]
            print(f"verify against {v['runtime']}: max abs error {v['max_abs_error']:.3g}, "
                  f"max rel error {v['max_rel_error']:.3g} (tolerance {v['tolerance']:.0e}) ok")
            for line in quantization_lines(v):
                print(line)
        return 0
    if args.command == "info":
        from . import format as packed

        spec = packed.read_spec(args.file)
        if args.json:
            print(json.dumps({**describe(spec), "host_plan": host_plan_of(spec)}, indent=2))
        else:
            print(format_info(spec, args.file))
        return 0
    if args.command == "demo":
        from .cli_demo import run_demo

        return run_demo()
    if args.command == "warmup":
        from .warmup import warmup

        result = warmup(general=not args.default_only, weights=args.weights)
        took = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result["seconds"].items())
        print(f"fastlstm kernels for {result['cpu']} ({result['isa']}, {result['lanes']} lanes) ready in "
              f"{result['cache']}: {took}")
        return 0
    if args.command == "bench":
        from .benchmarking.cli import run_bench

        return run_bench(quick=args.quick, out=args.out, sizes=args.sizes, threads=args.threads,
                         batch=args.batch, weights=args.weights, step_batch=args.step_batch)
    if args.command == "score":
        from .dask.cli import run_score  # imports Dask only when the command runs

        return run_score(args.model, args.inputs, args.output, scheduler=args.scheduler,
                         workers=args.workers, batch_size=args.batch_size, threads=args.threads)
    raise AssertionError(args.command)


def describe(spec) -> dict:
    """What `info` reports, as plain data."""
    return {
        "input_size": spec.input_size,
        "hidden_size": spec.hidden_size,
        "proj_size": spec.proj_size,
        "output_size": spec.output_size,
        "num_layers": spec.num_layers,
        "num_directions": spec.num_directions,
        "cells": [
            [
                {"reverse": ds.reverse, "peephole": ds.peephole is not None, **ds.options.to_json()}
                for ds in layer
            ]
            for layer in spec.layers
        ],
        "parameters": int(sum(a.size for layer in spec.layers for ds in layer
                              for a in (ds.W, ds.R, ds.b, ds.peephole, ds.proj) if a is not None)),
        "weights": spec.weights,
        "source": spec.source,
        "verify": spec.verify,
        **({"layers": {"pre": [_layer_info(x) for x in spec.pre], "post": [_layer_info(x) for x in spec.post]}}
           if spec.pre or spec.post else {}),
    }


def _layer_info(layer) -> dict:
    from .layers import layer_arrays, layer_meta

    return {**layer_meta(layer), "text": layer.describe(),
            "shapes": {name: list(a.shape) for name, a in layer_arrays(layer).items()}}


def format_info(spec, path: str) -> str:
    d = describe(spec)
    lines = [
        f"{path} ({os.path.getsize(path):,} bytes)",
        f"  layers      {d['num_layers']} x "
        f"{'bidirectional' if d['num_directions'] == 2 else 'one direction'}",
        f"  sizes       input {d['input_size']}, hidden {d['hidden_size']}, "
        f"projection {d['proj_size'] or 'none'}, output {d['output_size'] * d['num_directions']}",
        f"  parameters  {d['parameters']:,}",
        f"  weights     {d['weights']}" + ("" if d["weights"] == "fp32" else " (W and R; the rest is fp32)"),
        *plan_lines(spec),
    ]
    for l, layer in enumerate(d["cells"]):
        for k, cell in enumerate(layer):
            extras = [name for name, on in (("reverse", cell["reverse"]), ("peephole", cell["peephole"]),
                                            ("input_forget", cell["input_forget"])) if on]
            if cell["clip"] is not None:
                extras.append(f"clip={cell['clip']:g}")
            lines.append(f"  cell {l}.{k}    {'/'.join(cell['activations'])} {' '.join(extras)}".rstrip())
    for where, label in (("pre", "before"), ("post", "after")):
        for layer in d.get("layers", {}).get(where, []):
            shapes = ", ".join(f"{k} {tuple(v)}" for k, v in layer["shapes"].items())
            lines.append(f"  {label:<11} {layer['text']}{f'  [{shapes}]' if shapes else ''}")
    # source and verify are free-form metadata from the file: print them escaped, never trust their types
    source = ", ".join(f"{_one_line(k)}={_one_line(v)}" for k, v in sorted(d["source"].items())) or "unknown"
    lines.append(f"  source      {source}")
    if d["verify"]:
        v = d["verify"]
        lines.append(f"  verified    against {_one_line(v.get('runtime'))}: max abs error "
                     f"{_number(v.get('max_abs_error'))}, max rel error {_number(v.get('max_rel_error'))}")
        lines += ["  " + line for line in quantization_lines(v)]
    else:
        lines.append("  verified    no (convert with --verify)")
    return "\n".join(lines)


def _inner_sizes(spec) -> list[int]:
    return [max(spec.layer_input_size(l), spec.output_size) for l in range(spec.num_layers)]


def plan_lines(spec) -> list[str]:
    """How this host would run the file: the kernel plan, and the thread crossovers when already known (never
    measured here: `info` only reads calibration's cache)."""
    from . import plan_info

    return [f"  plan        {plan_info.plan_line(spec.weights, _inner_sizes(spec))}",
            f"  threads     {plan_info.crossover_line(plan_info.known_crossovers())}"]


def host_plan_of(spec) -> dict:
    from . import plan_info

    return {**plan_info.host_plan(_inner_sizes(spec)), "weights": spec.weights,
            "crossovers": plan_info.known_crossovers()}


def quantization_lines(v: dict) -> list[str]:
    """What --verify measured about reduced-precision weights (fields of a file's verify metadata)."""
    lines = []
    q = v.get("quantization")
    if isinstance(q, dict):
        lines.append(f"{_one_line(v.get('weights'))} weights against fp32: max abs error "
                     f"{_number(q.get('max_abs_error'))}, RMS {_number(q.get('rms_error'))}")
    node = v.get("source_node")
    if isinstance(node, dict) and "max_abs_error" in node:
        lines.append(f"against {_one_line(node.get('runtime'))} (which also quantizes x and h): max abs error "
                     f"{_number(node.get('max_abs_error'))}, RMS {_number(node.get('rms_error'))}")
    return lines


def _number(value) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.3g}"
    return f"{_one_line(value)!r}"


if __name__ == "__main__":
    sys.exit(main())
