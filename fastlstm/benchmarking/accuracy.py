"""Accuracy of the reduced-precision weight types: |Δy| against fp32, on random models and on Silero VAD.

    python -m fastlstm.benchmarking.accuracy [--quick] [--out DIR]

Random models: PyTorch's default init (U(-1/sqrt(H), 1/sqrt(H)), benchmarking.models.make_spec), I = H,
one direction, N(0, 1) inputs over T = 1000 steps, batch 1. Each weight type runs through the same
engine as fp32 (quantized W and R, float32 activations); ONNX Runtime's int8 (quantize_dynamic, which
also quantizes x and h per step) is measured on the same weights and inputs for comparison.

Silero VAD (the `silero-vad` package's silero_vad_16k_sequence.onnx): ONNX Runtime runs the whole model
on real-length audio and hands out the LSTM's input features; the LSTM then runs in fastlstm at each
weight type and the model's own head (ReLU, 1x1 convolution, sigmoid) turns its output into the speech
probability per 32 ms frame. The figure is the change in speech probability against fp32. The head is
applied in NumPy rather than by splicing our LSTM back into the ONNX graph: the pipeline is checked
against ONNX Runtime's own speech_probs at fp32 (it must agree to 5e-5) so the difference measured is
the LSTM's weights alone.

Error figures do not depend on timing or on the kernels' widening loads (those give the same numbers as
the dequantized weights to ~1e-7), so nothing here needs a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from ..engine import Engine
from ..quantize import quantize
from .models import SEED, make_spec

QUANTIZED_TYPES = ("fp16", "bf16", "int8")
SIZES = (64, 128, 256, 512, 1024)
LAYERS = (1, 2, 3)
STEPS = 1000
SAMPLE_RATE = 16000
FRAME, CONTEXT = 512, 64  # Silero's 16 kHz frame and the context it prefixes


def random_case(hidden: int, layers: int, steps: int = STEPS, seed: int = SEED):
    """(spec, x (T, 1, H)): a PyTorch-init model and N(0, 1) inputs, fixed seeds."""
    spec = make_spec(hidden, layers=layers, seed=seed)
    rng = np.random.default_rng([seed, hidden, layers, steps, 7])
    return spec, rng.standard_normal((steps, 1, hidden)).astype(np.float32)


def difference(y, reference) -> dict:
    """max and RMS |y - reference| (float64)."""
    delta = np.asarray(y, np.float64) - np.asarray(reference, np.float64)
    return {"max_abs": float(np.max(np.abs(delta))), "rms": float(np.sqrt(np.mean(delta**2)))}


def weight_type_errors(spec, x, types=QUANTIZED_TYPES) -> dict:
    """{type: difference from the fp32 engine's output} for the given spec and input."""
    reference, _ = Engine(spec).run(x)
    return {w: difference(Engine(quantize(spec, w)).run(x)[0], reference) for w in types}, reference


def ort_int8_output(spec, x, per_channel: bool) -> np.ndarray:
    """ONNX Runtime's quantize_dynamic model of `spec` run on x (T, B, I) -> (T, B, D*H)."""
    import onnx
    import onnxruntime as ort

    from .models import ONNX_IR_VERSION, ONNX_OPSET, _converter

    model = _converter("to_onnx")(spec, opset=ONNX_OPSET, ir_version=ONNX_IR_VERSION)
    blob = ort_quantize_dynamic(model.SerializeToString(), per_channel)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
    name = onnx.load_from_string(blob).graph.input[0].name
    return session.run(["Y"], {name: x})[0]


def ort_quantize_dynamic(onnx_bytes: bytes, per_channel: bool, op_types=None) -> bytes:
    """onnxruntime.quantization.quantize_dynamic (int8 weights) on a serialized model; its log chatter muted."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="fastlstm-ortq-") as tmp:
        src, dst = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
        Path(src).write_bytes(onnx_bytes)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # "Please consider to run pre-processing before quantization"
        try:
            quantize_dynamic(src, dst, per_channel=per_channel, weight_type=QuantType.QInt8,
                             op_types_to_quantize=op_types)
        finally:
            root.setLevel(level)
        return Path(dst).read_bytes()


def random_model_table(sizes=SIZES, layers=LAYERS, steps: int = STEPS, with_ort: bool = True,
                       progress=None) -> list[dict]:
    """One row per (H, layers): each weight type's and ORT int8's error against fp32."""
    rows = []
    for H in sizes:
        for L in layers:
            spec, x = random_case(H, L, steps)
            errors, reference = weight_type_errors(spec, x)
            row = {"H": H, "layers": L, "T": steps, "y_max": float(np.abs(reference).max()), **errors}
            if with_ort:
                for per_channel in (False, True):
                    key = "ort_int8_per_channel" if per_channel else "ort_int8"
                    try:
                        row[key] = difference(ort_int8_output(spec, x, per_channel).reshape(reference.shape),
                                              reference)
                    except ImportError as exc:
                        row[key] = {"error": f"not available ({exc})"}
            rows.append(row)
            if progress:
                progress(row)
    return rows


# ------------------------------------------------------------------------------------------- Silero


def silero_model_path() -> str:
    import silero_vad

    path = os.path.join(os.path.dirname(silero_vad.__file__), "data", "silero_vad_16k_sequence.onnx")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: this silero-vad version does not ship the sequence model")
    return path


def speech_audio(seconds: float = 60.0, seed: int = SEED) -> tuple[np.ndarray, str]:
    """(16 kHz float32 audio, what it is): espeak-ng speech, sentences between pauses over low noise,
    when espeak-ng is installed; else a synthetic voiced signal (harmonics with a moving pitch and
    syllable-rate bursts) over the same noise."""
    rng = np.random.default_rng([seed, 16])
    n = int(seconds * SAMPLE_RATE)
    audio = rng.normal(0.0, 0.003, n).astype(np.float32)
    espeak = shutil.which("espeak-ng")
    pos, k = int(0.5 * SAMPLE_RATE), 0
    if espeak:
        while pos < n:
            speech = _espeak(espeak, _SENTENCES[k % len(_SENTENCES)])
            end = min(n, pos + speech.size)
            audio[pos:end] += 0.5 * speech[: end - pos]
            pos = end + int(rng.uniform(0.4, 2.0) * SAMPLE_RATE)
            k += 1
        return audio, f"espeak-ng speech ({k} sentences with 0.4-2 s pauses) over N(0, 0.003) noise"
    t = np.arange(n) / SAMPLE_RATE
    pitch = 120 + 40 * np.sin(2 * np.pi * 0.3 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    voiced = sum(np.sin(h * phase) / h for h in range(1, 12))
    envelope = (np.sin(2 * np.pi * 4 * t) > 0) * (np.sin(2 * np.pi * 0.2 * t) > -0.3)
    audio += (0.1 * voiced * envelope).astype(np.float32)
    return audio, "synthetic voiced bursts (espeak-ng not installed) over N(0, 0.003) noise"


_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Quantized weights keep the activations in full precision.",
    "Please call me back tomorrow morning before nine o'clock.",
    "A long short term memory network carries its state from frame to frame.",
    "Seven hundred and twenty three people attended the meeting.",
    "Turn left at the second traffic light and then keep going straight.",
]


def _espeak(espeak: str, text: str) -> np.ndarray:
    """espeak-ng's 22050 Hz speech for `text`, resampled to 16 kHz (linear interpolation), float32."""
    import wave

    with tempfile.TemporaryDirectory(prefix="fastlstm-speech-") as tmp:
        path = os.path.join(tmp, "s.wav")
        subprocess.run([espeak, "-w", path, text], check=True, capture_output=True, timeout=60)
        with wave.open(path) as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
    times = np.arange(int(pcm.size * SAMPLE_RATE / rate)) / SAMPLE_RATE
    return np.interp(times, np.arange(pcm.size) / rate, pcm).astype(np.float32)


def frames_of(audio: np.ndarray) -> np.ndarray:
    """(N, CONTEXT + FRAME) model input: each 512-sample frame prefixed by the previous frame's last
    64 samples (zeros first), the last frame zero-padded: the sequence model's input."""
    count = -(-audio.size // FRAME)
    frames = np.zeros((count, FRAME), np.float32)
    frames.reshape(-1)[: audio.size] = audio
    context = np.zeros((count, CONTEXT), np.float32)
    context[1:] = frames[:-1, -CONTEXT:]
    return np.concatenate([context, frames], axis=1)


class SileroPipeline:
    """The Silero VAD sequence model split at its LSTM: ORT computes the features, fastlstm the LSTM,
    NumPy the head. `probabilities(spec)` -> (N,) speech probability per frame."""

    def __init__(self, audio: np.ndarray, path: str | None = None):
        import onnx
        import onnxruntime as ort
        from onnx import numpy_helper

        import converters

        path = path or silero_model_path()
        self.spec = converters.from_onnx(path, lstm_only=True)  # the LSTM alone: ORT runs the rest
        model = onnx.load(path)
        lstm = next(n for n in model.graph.node if n.name == self.spec.source["node"][0])
        feature = lstm.input[0]
        model.graph.output.append(onnx.helper.make_tensor_value_info(feature, onnx.TensorProto.FLOAT, None))
        head = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.head_w = head["output.weight"].reshape(-1).astype(np.float64)  # (128,): the 1x1 conv
        self.head_b = float(head["output.bias"].reshape(-1)[0])
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        zeros = np.zeros((1, 1, self.spec.hidden_size), np.float32)
        feed = {"input": frames_of(audio), "h": zeros, "c": zeros}
        self.ort_probs, self.features = session.run(["speech_probs", feature], feed)
        self.ort_probs = self.ort_probs.reshape(-1)
        self.session_model = model

    def probabilities(self, spec) -> np.ndarray:
        y, _ = Engine(spec).run(self.features)  # (N, 1, 128)
        logits = np.maximum(y[:, 0].astype(np.float64), 0) @ self.head_w + self.head_b
        return 1 / (1 + np.exp(-logits))

    def check(self, tolerance: float = 5e-5) -> float:
        """max |our fp32 pipeline - ORT's speech_probs|; AssertionError above `tolerance`."""
        err = float(np.max(np.abs(self.probabilities(self.spec) - self.ort_probs)))
        if not err <= tolerance:
            raise AssertionError(f"the split Silero pipeline differs from ONNX Runtime by {err:.3g} at fp32")
        return err


def silero_table(seconds: float = 60.0, with_ort: bool = True) -> dict:
    """Change in Silero's speech probability per weight type (and ORT int8 on the LSTM) against fp32."""
    audio, what = speech_audio(seconds)
    pipe = SileroPipeline(audio)
    fp32_check = pipe.check()
    reference = pipe.probabilities(pipe.spec)
    result = {"audio": what, "seconds": seconds, "frames": int(reference.size),
              "pipeline_vs_ort_fp32": fp32_check, "speech_frames_fp32": int(np.sum(reference > 0.5))}
    for w in QUANTIZED_TYPES:
        p = pipe.probabilities(quantize(pipe.spec, w))
        result[w] = {**difference(p, reference), "flipped_at_0.5": int(np.sum((p > 0.5) != (reference > 0.5)))}
    if with_ort:
        import onnxruntime as ort

        for per_channel in (False, True):
            blob = ort_quantize_dynamic(pipe.session_model.SerializeToString(), per_channel, op_types=["LSTM"])
            session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
            zeros = np.zeros((1, 1, pipe.spec.hidden_size), np.float32)
            p = session.run(["speech_probs"], {"input": frames_of(audio), "h": zeros, "c": zeros})[0].reshape(-1)
            key = "ort_int8_per_channel" if per_channel else "ort_int8"
            result[key] = {**difference(p, pipe.ort_probs),
                           "flipped_at_0.5": int(np.sum((p > 0.5) != (pipe.ort_probs > 0.5)))}
    return result


# ------------------------------------------------------------------------------------------- report

COLUMNS = (*QUANTIZED_TYPES, "ort_int8", "ort_int8_per_channel")
TITLES = {"fp16": "fp16", "bf16": "bf16", "int8": "int8", "ort_int8": "ORT int8",
          "ort_int8_per_channel": "ORT int8 per-channel"}


def _pair(entry: dict | None) -> str:
    if not entry or "max_abs" not in entry:
        return "-"
    return f"{entry['max_abs']:.1e} / {entry['rms']:.1e}"


def markdown(rows: list[dict], silero: dict | None) -> str:
    head = ["H", "layers", "max abs y", *(f"{TITLES[c]} max / RMS" for c in COLUMNS)]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" for _ in head) + "|"]
    for r in rows:
        cells = [str(r["H"]), str(r["layers"]), f"{r['y_max']:.2f}", *(_pair(r.get(c)) for c in COLUMNS)]
        out.append("| " + " | ".join(cells) + " |")
    if silero:
        out += ["", f"Silero VAD, {silero['frames']} frames ({silero['seconds']:.0f} s of {silero['audio']}), "
                    f"{silero['speech_frames_fp32']} frames above 0.5 at fp32; pipeline vs ORT at fp32: "
                    f"{silero['pipeline_vs_ort_fp32']:.1e}", "",
                "| weights | max abs Δp | RMS Δp | frames flipped at 0.5 |", "|---|---:|---:|---:|"]
        for c in COLUMNS:
            e = silero.get(c)
            if e and "max_abs" in e:
                out.append(f"| {TITLES[c]} | {e['max_abs']:.1e} | {e['rms']:.1e} | {e['flipped_at_0.5']} |")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastlstm.benchmarking.accuracy",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="H = 64, 256; 1-2 layers; 30 s of audio")
    parser.add_argument("--sizes", help="hidden sizes, comma separated")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--no-silero", action="store_true")
    parser.add_argument("--out", help="directory for accuracy.json and accuracy.md")
    args = parser.parse_args(argv)
    sizes = [int(v) for v in args.sizes.split(",")] if args.sizes else ((64, 256) if args.quick else SIZES)
    layers = (1, 2) if args.quick else LAYERS

    def progress(row):
        print(f"H={row['H']:<5} layers={row['layers']}  " + "  ".join(
            f"{TITLES[c]} {_pair(row.get(c))}" for c in COLUMNS), file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        rows = random_model_table(sizes, layers, args.steps, progress=progress)
        silero = None if args.no_silero else silero_table(30.0 if args.quick else 120.0)
    text = markdown(rows, silero)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "accuracy.json").write_text(json.dumps({"random": rows, "silero": silero}, indent=1) + "\n")
        (out / "accuracy.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
