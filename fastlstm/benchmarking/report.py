"""Turn results into the console table, report.md, results.json and the plot.

Speedups are peer time / fastlstm time (above 1: fastlstm is faster). "x proxy" is fastlstm time /
roofline-proxy time (numpy BLAS over the same weight bytes, peers.Proxy): near 1 means at the memory bound.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from . import isolated, plan_report, quantized_report, streams
from .peers import ENGINES, PROXY

PLOT_NAME = "lstm_bench.png"
LABELS = {"fastlstm": "fastlstm", "onnxruntime": "ONNX Runtime", "torch": "PyTorch", PROXY: "proxy"}
PEERS = [e for e in ENGINES if e != "fastlstm"]


# ---- small formatters -----------------------------------------------------------------------------
def _num(v: float) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _ratio(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.2f}x"


def _err(v: float | None) -> str:
    return "-" if v is None else f"{v:.1e}"


def _status(entry: dict) -> str:
    """Short cell text for an engine that has no figure ('not installed', 'disabled', ...)."""
    text = entry.get("status", "n/a")
    return text.split(" (")[0].split(":")[0]


def _time(entry: dict) -> float | None:
    return entry.get("us_per_step") if "median_us" in entry else None


NOISY = 0.3  # (p75 - p25) / median above this marks a cell with "*"


def _noisy(entry: dict) -> bool:
    if "median_us" not in entry:
        return False
    return entry["rounds"] < 3 or entry["p75_us"] - entry["p25_us"] > NOISY * entry["median_us"]


def _cell(entry: dict, key: str, fmt) -> str:
    if key not in entry:
        return _status(entry)
    return fmt(entry[key]) + ("*" if _noisy(entry) else "")


# ---- tables as rows -------------------------------------------------------------------------------
SHARED = ", all engines in one process"  # multi-threaded rows measured side by side (isolated.py: one each)


def sections(results: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """[(title, headers, rows)] for every (mode, B, threads) in the results."""
    recs = results["results"]
    keys = []
    for r in recs:
        k = (r["mode"], r["B"], r["threads"])
        if k not in keys:
            keys.append(k)
    out = []
    for mode, B, threads in keys:
        rows_of = [r for r in recs if (r["mode"], r["B"], r["threads"]) == (mode, B, threads)]
        T = rows_of[0]["T"]
        where = SHARED if threads > 1 else ""
        if mode == "batched":
            title = f"Batched run, B={B}, T={T}, {threads} thread(s){where}: throughput in frames/s (B*T / time)"
            value_key, fmt = "frames_per_s", _num
        elif mode == "run":
            title = f"Run, B=1, T={T}, {threads} thread(s){where}: us per step (whole-sequence time / T)"
            value_key, fmt = "us_per_step", _num
        else:
            title = f"Step latency, B=1, {threads} thread(s){where}: us per step (state carried)"
            value_key, fmt = "us_per_step", _num
        headers = ["H", *[LABELS[e] for e in ENGINES], "proxy"]
        headers += [f"vs {LABELS[p]}" for p in PEERS] + ["x proxy"]
        headers += [f"err {LABELS[e]}" for e in ENGINES if e != "onnxruntime"]
        rows = []
        for r in sorted(rows_of, key=lambda r: r["H"]):
            eng = r["engines"]
            row = [str(r["H"])]
            row += [_cell(eng[e], value_key, fmt) for e in [*ENGINES, PROXY]]
            fast = _time(eng["fastlstm"])
            for p in PEERS:
                other = _time(eng[p])
                row.append(_ratio(other / fast) if fast and other else _status(eng[p]) if not other else "-")
            proxy = _time(eng[PROXY])
            row.append(_ratio(fast / proxy) if fast and proxy else "-")
            for e in ENGINES:
                if e != "onnxruntime":
                    row.append(_err(eng[e].get("max_abs_err")) if r.get("reference") else "no ORT")
            rows.append(row)
        out.append((title, headers, rows))
    return out


GENERATE_TITLE = ("Generation, B=1 (Embedding V x H -> LSTM H -> Linear V; step + argmax per token): tokens/s "
                  "(head = the Linear's weights, read once per token)")


def generate_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """One row per (threads, H, V): tokens/s per engine, speedups, accuracy against ONNX Runtime."""
    headers = ["threads", "H", "V", "head MiB", *[LABELS[e] for e in ENGINES]]
    headers += [f"vs {LABELS[p]}" for p in PEERS] + ["us/token fastlstm"]
    headers += [f"err {LABELS[e]}" for e in ENGINES if e != "onnxruntime"]
    rows = []
    for r in results.get("generate", []):
        eng = r["engines"]
        row = [str(r["threads"]), str(r["H"]), str(r["V"]), f"{r['head_mib']:.1f}"]
        row += [_cell(eng[e], "tokens_per_s", _num) for e in ENGINES]
        fast = eng["fastlstm"].get("us_per_token")
        for p in PEERS:
            other = eng[p].get("us_per_token")
            row.append(_ratio(other / fast) if fast and other else _status(eng[p]) if not other else "-")
        row.append(_num(fast) if fast else "-")
        for e in ENGINES:
            if e != "onnxruntime":
                row.append(_err(eng[e].get("max_abs_err")) if r.get("reference") else "no ORT")
        rows.append(row)
    return headers, rows


def coldstart_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    cs = results["coldstart"]["engines"]
    headers = ["engine", "import s", "load s", "first call s", "total s", "process wall s"]
    rows = []
    for name, e in cs.items():
        if not isinstance(e, dict):
            continue
        if "total_s" in e:
            keys = ("import_s", "load_s", "first_call_s", "total_s", "process_s")
            rows.append([LABELS.get(name, name), *(f"{e[k]:.3f}" for k in keys)])
        else:
            rows.append([LABELS.get(name, name), e.get("status") or e.get("error", "n/a"), "", "", "", ""])
    return headers, rows


def memory_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    mem = results["memory"]["engines"]
    headers = ["engine", "file MiB", "load peak MiB", "peak / file", "peak RSS MiB"]
    rows = []
    for name, e in mem.items():
        if not isinstance(e, dict):
            continue
        if "load_peak_mib" in e:
            rows.append([LABELS.get(name, name), _num(e["file_mib"]), _num(e["load_peak_mib"]),
                         _ratio(e["load_peak_mib"] / e["file_mib"]), _num(e["peak_mib"])])
        else:
            rows.append([LABELS.get(name, name), e.get("status") or e.get("error", "n/a"), "", "", ""])
    return headers, rows


def summary_lines(results: dict) -> list[str]:
    """One sentence per (mode, B, threads): the speedup range against each peer over H."""
    lines = []
    for title, headers, rows in sections(results):
        parts = []
        for p in PEERS:
            col = headers.index(f"vs {LABELS[p]}")
            vals = [float(r[col][:-1]) for r in rows if r[col].endswith("x")]
            if vals:
                parts.append(f"{min(vals):.2f}x-{max(vals):.2f}x vs {LABELS[p]}")
            else:
                parts.append(f"{LABELS[p]} {rows[0][col] if rows else 'n/a'}")
        lines.append(f"{title.split(':')[0]}: fastlstm " + ", ".join(parts) + " (over H; above 1x = faster)")
    return lines + isolated.summary_lines(results) + streams.summary_lines(results)


OWN_PROCESS_NOTE = (
    "The comparison figure for more than one thread: every engine runs in a process of its own (interleaved round "
    "by round, each child waits for its own pools to go idle before the next one runs), so no engine's thread pool "
    "competes with another's. `vs 1 thread` = fastlstm's 1-thread time / its time here (below 0.95x: the team "
    "loses). `in one process` = each engine's time in the shared-process table above / its time here: above 1x, "
    "running beside the other engines (fastlstm's team, ONNX Runtime's pool, PyTorch's OpenMP, OpenBLAS) cost it "
    "that much.")
STREAMS_NOTE = (
    "Batched step: `eng.step(x (B, I), state)`, ONNX Runtime `session.run` on the T=1 model at batch B feeding h/c "
    "back, PyTorch `lstm(x (1, B, I), (h, c))`, the proxy `[W | R] @ [x ; h]` with B columns; us per call. "
    "`per stream` = fastlstm's call / B; `÷ 1 stream` = that against fastlstm's B = 1 call (issue 12's target at "
    "B = 16, H = 128, I = 40, 1 thread: at most 0.3x). `(1, I) +us` = a (1, I) frame against the (I,) frame at "
    "B = 1 (target at most +1 us); `pool +us` = `StreamPool.step` with B open streams against the batched step "
    "(target at most +2 us). Two Python threads: one shared engine, each thread stepping its own stream "
    "(`step(x, state, out=buf)`), against the same frames stepped one stream after the other on one thread, at "
    "the same thread budget (`fastlstm.set_num_threads`); the target at H = 512 is at least 1.3x. `bit-identical`: "
    "the streams stepped concurrently end in exactly the serial states.")


# ---- renderers ------------------------------------------------------------------------------------
NOISY_NOTE = (f"* noisy: the interquartile range of the rounds is wider than {NOISY:.0%} of the median, "
              "or a slow configuration ran fewer than 3 rounds (see results.json)")


def _text_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def text_tables(results: dict) -> str:
    parts = []
    for title, headers, rows in sections(results):
        parts += ["", title, _text_table(headers, rows)]
    for title, headers, rows in [*isolated.sections(results), *streams.sections(results),
                                 *quantized_report.sections(results)]:
        parts += ["", title, _text_table(headers, rows)]
    if results.get("generate"):
        parts += ["", GENERATE_TITLE, _text_table(*generate_rows(results))]
    parts += [NOISY_NOTE]
    cs = results["coldstart"]
    parts += ["", f"Cold start (fresh process: import + load + first call), H={cs['H']}, "
                  f"median of {cs['repeats']}", _text_table(*coldstart_rows(results))]
    mem = results["memory"]
    parts += ["", f"Load memory, H={mem['H']} (peak RSS growth during load + first call vs file size)",
              _text_table(*memory_rows(results))]
    parts += ["", "Kernel plan:"] + plan_report.lines(results, markdown=False)
    parts += ["", "Summary:"] + ["  " + s for s in summary_lines(results)]
    return "\n".join(parts)


def markdown(results: dict) -> str:
    m = results["machine"]
    v = m["versions"]
    cfg = results["config"]
    peer_notes = [f"{LABELS.get(n, n)}: {p['status']}" for n, p in results["peers"].items() if not p["available"]]
    out = [
        "# fastlstm benchmark report",
        "",
        f"`{results['command']}` ({cfg['preset']} sweep) took {results['wall_time_s']:.0f} s.",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['logical_cpus']} logical CPUs ({m['usable_cpus']} usable by this process)",
        f"- Threads benchmarked: {', '.join(map(str, m['threads_benchmarked']))} "
        f"(fastlstm may use up to {m['fastlstm_max_threads']})",
        f"- {m['os']}, Python {m['python']}",
        f"- fastlstm {v['fastlstm']}, numba {v['numba']}, numpy {v['numpy']}, "
        f"ONNX Runtime {v['onnxruntime'] or 'not installed'}, PyTorch {v['torch'] or 'not installed'}",
    ]
    loads = [m.get("load_average_start"), m.get("load_average_end")]
    if None not in loads:
        out += [f"- Load average (1 min) at start / end: {loads[0]:.2f} / {loads[1]:.2f}"]
        if max(loads) > m["usable_cpus"] + 0.5:  # the sweep itself accounts for about one
            out += ["", f"**Warning: the machine was busy (load above its {m['usable_cpus']} CPUs). Other "
                    "processes shared the cores, so the figures are noisy and multi-threaded ones "
                    "pessimistic for every engine. Rerun on an idle machine before deciding.**"]
    if peer_notes:
        out += [f"- Not measured: {'; '.join(peer_notes)}"]
    plan = plan_report.lines(results, markdown=True)
    if plan:
        out += ["", "## Kernel plan and threads", ""] + plan
    out += ["", "## At a glance", ""] + [f"- {s}" for s in summary_lines(results)]
    out += ["", f"![us per step against H]({PLOT_NAME})", ""]
    out += ["## Latency and throughput", "",
            "Median of interleaved rounds. `vs X` = X time / fastlstm time (above 1x: fastlstm is faster). "
            "`x proxy` = fastlstm time / roofline proxy time. "
            "`err` = max |y - y_ORT| on the benchmarked input.",
            ""]
    for title, headers, rows in sections(results):
        out += [f"### {title}", "", _md_table(headers, rows), ""]
    own = isolated.sections(results)
    if own:
        out += ["## Several threads, each engine in its own process", "", OWN_PROCESS_NOTE, ""]
        for title, headers, rows in own:
            out += [f"### {title}", "", _md_table(headers, rows), ""]
    stream_sections = streams.sections(results)
    if stream_sections:
        out += ["## Streaming: batched step and Python threads", "", STREAMS_NOTE, ""]
        for title, headers, rows in stream_sections:
            out += [f"### {title}", "", _md_table(headers, rows), ""]
    if results.get("generate"):
        out += [f"### {GENERATE_TITLE}", "", _md_table(*generate_rows(results)), "",
                "Every engine runs the same one-step ONNX graph's weights: ONNX Runtime the graph itself, "
                "fastlstm the graph converted whole by `converters.from_onnx`, PyTorch nn.Embedding + nn.LSTM "
                "+ nn.Linear. `err` = max |logits - ONNX Runtime's| over a 24-token greedy run.", ""]
    below = quantized_report.sections(results)
    if below:
        out += ["## Weights below fp32", "", quantized_report.NOTE, "",
                f"![us per step per engine and weight type]({quantized_report.PLOT_NAME})", ""]
        for title, headers, rows in below:
            out += [f"### {title}", "", _md_table(headers, rows), ""]
    out += [NOISY_NOTE, ""]
    cs, mem = results["coldstart"], results["memory"]
    out += ["## Cold start", "",
            f"A fresh Python process per engine: import the engine, load the H={cs['H']} model file, make "
            f"the first call (one frame). Median of {cs['repeats']} run(s), engines interleaved. "
            "`process wall` adds interpreter start-up and `import numpy`. `fastlstm (empty numba cache)` is "
            "the very first run after installing, when numba compiles the kernels into its cache.", "",
            _md_table(*coldstart_rows(results)), "",
            "## Memory while loading a large model", "",
            f"H = I = {mem['H']}, one layer. `load peak` = peak RSS from the end of the import to the "
            "end of the first call, minus the RSS after the import (the child's VmHWM; ru_maxrss would "
            "inherit the benchmark process's peak), against the size of the engine's own model file.", "",
            _md_table(*memory_rows(results)), ""]
    out += ["## Method", "",
            "- Every engine runs the same weights: one fixed-seed spec per H (input size = H, one layer), "
            "converted with `converters.to_onnx` (opset 17, IR 8) and `converters.to_torch`.",
            "- step: fastlstm `eng.step(x_t, state)`; ONNX Runtime `session.run` on the model with T=1, "
            "feeding Y_h/Y_c back as initial_h/initial_c; PyTorch `lstm(x_t, (h, c))` under "
            "`torch.inference_mode()`. run: the whole sequence from a zero state, reported per step.",
            f"- Each figure is the median of {cfg['rounds']} rounds; in every round each engine runs one "
            f"block of ~{cfg['block_s'] * 1000:.0f} ms in a shuffled order, so machine drift hits all "
            "engines alike. "
            "results.json keeps the 25th/75th percentiles.",
            "- threads=N: `fastlstm.set_num_threads(N)` and numpy's BLAS limited to N (the proxy's), "
            "ONNX Runtime `intra_op_num_threads=N`, `torch.set_num_threads(N)`. "
            "Engines keep their default thread-pool behaviour (e.g. ONNX Runtime's spinning workers), "
            "but before every block the timer waits until the other engines' pools have stopped "
            "spinning, so an idle engine does not hold a core the timed one needs. With more than one "
            "thread every configuration is also measured with each engine in a process of its own "
            "(`fastlstm/benchmarking/isolated.py`): the comparison figure; the shared-process one is what "
            "running the engines side by side costs.",
            "- 1-thread rows, batched step and Python threads run interleaved in the benchmark process; "
            "fastlstm's thread crossovers are read from the calibration cache (or measured) before the "
            "first timed call.",
            "- proxy: numpy BLAS over the weight bytes the LSTM reads, timed the same way: per step "
            "`[W | R] @ [x_t ; h]` (4H x (I+H) float32), per run one GEMM `x @ W.T` plus T products "
            "`R @ h`. What streaming the weights costs with no cell arithmetic: a roofline reference.",
            "- Accuracy: max absolute difference from ONNX Runtime's `run` output on the same input; in step "
            "mode each engine steps through the sequence frame by frame.",
            ""]
    return "\n".join(out)


def plot(results: dict, path: Path) -> Path | None:
    """us per step against H (log-log), one line per engine; a row per thread count, a column per mode."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    recs = results["results"]
    threads = sorted({r["threads"] for r in recs})
    panels = []
    for r in recs:
        k = (r["mode"], r["B"])
        if k not in panels:
            panels.append(k)
    fig, axes = plt.subplots(len(threads), len(panels), figsize=(4.2 * len(panels), 3.6 * len(threads)),
                             squeeze=False, sharex=True)
    styles = {"fastlstm": ("C0", "-", "o"), "onnxruntime": ("C1", "-", "s"), "torch": ("C3", "-", "^"),
              PROXY: ("0.5", "--", None)}
    for i, n in enumerate(threads):
        for j, (mode, B) in enumerate(panels):
            ax = axes[i][j]
            rows = sorted((r for r in recs if (r["mode"], r["B"], r["threads"]) == (mode, B, n)),
                          key=lambda r: r["H"])
            for e in [*ENGINES, PROXY]:
                pts = [(r["H"], r["engines"][e]["us_per_step"]) for r in rows
                       if "us_per_step" in r["engines"][e]]
                color, ls, marker = styles[e]
                label = LABELS[e] + (" (R @ h)" if e == PROXY else "")
                if pts:
                    ax.plot(*zip(*pts, strict=True), color=color, linestyle=ls, marker=marker, label=label)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            name = {"step": "step (B=1)", "run": "run (B=1)"}.get(mode, f"batched run (B={B})")
            ax.set_title(f"{name}, {n} thread{'s' if n > 1 else ''}", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            if j == 0:
                ax.set_ylabel("µs per step")
            if i == len(threads) - 1:
                ax.set_xlabel("hidden size H")
            if rows:
                ax.set_xticks([r["H"] for r in rows], [str(r["H"]) for r in rows])
    axes[0][0].legend(fontsize=8)
    m = results["machine"]
    fig.suptitle(f"fastlstm vs ONNX Runtime vs PyTorch on {m['cpu']} (lower is better)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_all(results: dict, out_dir: Path) -> list[Path]:
    json_path = out_dir / "results.json"
    json_path.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    written = [out_dir / "report.md", json_path]
    png = plot(results, out_dir / PLOT_NAME)
    text = markdown(results)
    if png is None:
        text = text.replace(f"![us per step against H]({PLOT_NAME})", "(no plot: matplotlib is missing)")
    else:
        written.append(png)
    weights_png = quantized_report.plot(results, out_dir / quantized_report.PLOT_NAME)
    if weights_png is not None:
        written.append(weights_png)
    (out_dir / "report.md").write_text(text)
    return written


def progress_line(rec: dict) -> str:
    """What the sweep prints after one measurement."""
    if rec["mode"] == "generate":
        parts = [f"{LABELS[e]} {_num(rec['engines'][e]['tokens_per_s'])}" if "tokens_per_s" in rec["engines"][e]
                 else f"{LABELS[e]} {_status(rec['engines'][e])}" for e in ENGINES]
        return f"generate H={rec['H']:<5} V={rec['V']:<6} threads={rec['threads']}  tokens/s: " + " | ".join(parts)
    parts = []
    for e in [*ENGINES, PROXY]:
        entry = rec["engines"].get(e, {})
        parts.append(f"{LABELS[e]} {_num(entry['us_per_step'])}" if "us_per_step" in entry
                     else f"{LABELS[e]} {_status(entry)}")
    what = f"{rec['mode']:<7} H={rec['H']:<5} B={rec['B']:<3} threads={rec['threads']}"
    return f"{what}  us/step: " + " | ".join(parts)
