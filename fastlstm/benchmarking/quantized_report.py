"""The report's weight-type tables and plot: each engine at fp32 and below, speed and error side by side.

Rows are (H, weight type); columns each engine's path at that type (quantized_peers.BY_WEIGHTS) with its
time and its max |y - y_fp32| (the fp32 reference is ONNX Runtime's fp32 run, as in the main tables).
"""

from __future__ import annotations

from pathlib import Path

from .quantized_peers import BY_WEIGHTS

PLOT_NAME = "lstm_bench_weights.png"
# column -> the engine entry holding it, per weight type
COLUMNS = {
    "fastlstm": {"fp32": "fastlstm", "int8": "fastlstm int8", "fp16": "fastlstm fp16", "bf16": "fastlstm bf16"},
    "ORT": {"fp32": "onnxruntime", "int8": "onnxruntime int8"},
    "ORT per-channel": {"int8": "onnxruntime int8 per-channel"},
    "PyTorch": {"fp32": "torch", "int8": "torch qint8", "fp16": "torch float16"},
}
NOTE = ("Each engine's own path at each weight type, on the same weights: fastlstm quantizes W and R only "
        "(fp32 activations); ONNX Runtime int8 is quantize_dynamic (per-tensor, and per_channel=True), which "
        "also quantizes x and h every step; PyTorch is torch.ao.quantization.quantize_dynamic (qint8, float16). "
        "`err` = max |y - y_fp32| (ONNX Runtime's fp32 run). `vs best ORT` = the faster ORT path at that type / "
        "fastlstm.")


def weight_types(results: dict) -> list[str]:
    return [w for w in results.get("config", {}).get("weights", ["fp32"]) if w in BY_WEIGHTS]


def sections(results: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """[(title, headers, rows)] per (mode, B, threads); [] when only fp32 was measured."""
    types = weight_types(results)
    if types == ["fp32"] or not types:
        return []
    keys = []
    for r in results["results"]:
        k = (r["mode"], r["B"], r["threads"])
        if k not in keys:
            keys.append(k)
    out = []
    for mode, B, threads in keys:
        recs = sorted((r for r in results["results"] if (r["mode"], r["B"], r["threads"]) == (mode, B, threads)),
                      key=lambda r: r["H"])
        below = {name for names in COLUMNS.values() for w, name in names.items() if w != "fp32"}
        if not any(name in r["engines"] for r in recs for name in below):
            continue  # the types below fp32 were not measured at this thread count (--quick: 1 thread only)
        unit = "frames/s" if mode == "batched" else "us per step"
        title = f"Weights below fp32: {mode}, B={B}, {threads} thread(s), {unit}"
        headers = ["H", "weights", *COLUMNS, "vs best ORT", *(f"err {c}" for c in COLUMNS)]
        rows = []
        for r in recs:
            for w in types:
                entries = {c: r["engines"].get(names.get(w, ""), None) for c, names in COLUMNS.items()}
                row = [str(r["H"]), w]
                row += [_speed(e, mode) for e in entries.values()]
                row.append(_vs_best_ort(r, w))
                row += [_err(e) for e in entries.values()]
                rows.append(row)
        out.append((title, headers, rows))
    return out


def _speed(entry: dict | None, mode: str) -> str:
    if entry is None:
        return "-"
    key = "frames_per_s" if mode == "batched" else "us_per_step"
    if key not in entry:
        return entry.get("status", "n/a").split(" (")[0].split(":")[0]
    v = entry[key]
    return f"{v:,.0f}" if v >= 1000 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _err(entry: dict | None) -> str:
    return f"{entry['max_abs_err']:.1e}" if entry and "max_abs_err" in entry else "-"


def _vs_best_ort(rec: dict, w: str) -> str:
    ours = rec["engines"].get(COLUMNS["fastlstm"].get(w, ""), {}).get("us_per_step")
    ort = [rec["engines"].get(COLUMNS[c].get(w, ""), {}).get("us_per_step") for c in ("ORT", "ORT per-channel")]
    ort = [t for t in ort if t]
    if not ours or not ort:
        return "-"
    return f"{min(ort) / ours:.2f}x"


def plot(results: dict, path: Path) -> Path | None:
    """us per step against H: a colour per engine, a line style per weight type (fp32 / int8 / fp16 / bf16);
    a column per mode, a row per thread count."""
    types = weight_types(results)
    if types == ["fp32"] or not types:
        return None
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
        if (r["mode"], r["B"]) not in panels:
            panels.append((r["mode"], r["B"]))
    colours = {"fastlstm": "C0", "ORT": "C1", "ORT per-channel": "C2", "PyTorch": "C3"}
    styles = {"fp32": "-", "int8": "--", "fp16": ":", "bf16": "-."}
    fig, axes = plt.subplots(len(threads), len(panels), figsize=(4.6 * len(panels), 3.8 * len(threads)),
                             squeeze=False, sharex=True)
    for i, n in enumerate(threads):
        for j, (mode, B) in enumerate(panels):
            ax = axes[i][j]
            rows = sorted((r for r in recs if (r["mode"], r["B"], r["threads"]) == (mode, B, n)), key=lambda r: r["H"])
            for column, names in COLUMNS.items():
                for w in types:
                    name = names.get(w)
                    pts = [(r["H"], r["engines"][name]["us_per_step"]) for r in rows
                           if name and "us_per_step" in r["engines"].get(name, {})]
                    if pts:
                        ax.plot(*zip(*pts, strict=True), color=colours[column], linestyle=styles[w], marker="o",
                                markersize=3, label=f"{column} {w}")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{mode} (B={B}), {n} thread{'s' if n > 1 else ''}", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            if rows:
                ax.set_xticks([r["H"] for r in rows], [str(r["H"]) for r in rows])
            if j == 0:
                ax.set_ylabel("µs per step")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Weight types per engine on {results['machine']['cpu']} (lower is better)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
