"""The engines' paths below fp32, behind the same Peer interface (peers.py), on the same weights.

    fastlstm fp16 / bf16 / int8        converters.quantize of the benchmark spec (weights only)
    onnxruntime int8                   onnxruntime.quantization.quantize_dynamic (QInt8, per-tensor)
    onnxruntime int8 per-channel       the same with per_channel=True
    torch qint8 / torch float16        torch.ao.quantization.quantize_dynamic on the nn.LSTM

ONNX Runtime's and PyTorch's int8 LSTMs also quantize the activations x and h every step (fastlstm's do
not); the report puts each engine's error against fp32 next to its speed. torch.ao.quantization is
deprecated (PyTorch 2.10+ warns); its DeprecationWarnings are silenced around the call.
"""

from __future__ import annotations

import warnings

from .peers import FastLSTM, OnnxRuntime, Torch

# weight type -> the names of the engines' peers at that type (fp32 is the plain engines of peers.py)
BY_WEIGHTS = {
    "fp32": ("fastlstm", "onnxruntime", "torch"),
    "int8": ("fastlstm int8", "onnxruntime int8", "onnxruntime int8 per-channel", "torch qint8"),
    "fp16": ("fastlstm fp16", "torch float16"),
    "bf16": ("fastlstm bf16",),
}
WEIGHT_TYPES = tuple(BY_WEIGHTS)


class FastLSTMQuantized(FastLSTM):
    def __init__(self, weights: str):
        self.weights = weights
        self.name = f"fastlstm {weights}"

    def spec_of(self, model):
        return model.quantized_spec(self.weights)


class OnnxRuntimeInt8(OnnxRuntime):
    def __init__(self, per_channel: bool):
        self.per_channel = per_channel
        self.name = "onnxruntime int8" + (" per-channel" if per_channel else "")

    def status(self):
        return super().status() or _module_missing("onnxruntime.quantization")

    def onnx_of(self, model) -> bytes:
        return model.ort_int8_bytes(self.per_channel)


class TorchDynamic(Torch):
    def __init__(self, dtype: str):
        self.dtype = dtype  # "qint8" | "float16"
        self.name = f"torch {dtype}"

    def module_of(self, model):
        return model.torch_dynamic(self.dtype)


def quantized_peers(weights) -> dict:
    """{name: Peer} for the types in `weights` beyond fp32."""
    makers = {"fastlstm int8": lambda: FastLSTMQuantized("int8"), "fastlstm fp16": lambda: FastLSTMQuantized("fp16"),
              "fastlstm bf16": lambda: FastLSTMQuantized("bf16"),
              "onnxruntime int8": lambda: OnnxRuntimeInt8(False),
              "onnxruntime int8 per-channel": lambda: OnnxRuntimeInt8(True),
              "torch qint8": lambda: TorchDynamic("qint8"), "torch float16": lambda: TorchDynamic("float16")}
    return {name: makers[name]() for w in weights if w != "fp32" for name in BY_WEIGHTS[w]}


def torch_dynamic(lstm, dtype: str):
    """torch.ao.quantization.quantize_dynamic(nn.LSTM) to qint8 or float16, deprecation warnings muted."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)  # "torch.ao.quantization is deprecated" on some builds
        from torch.ao.quantization import quantize_dynamic

        # quantize_dynamic swaps children only: wrap the LSTM so the LSTM itself is swapped
        wrapped = quantize_dynamic(torch.nn.Sequential(lstm), {torch.nn.LSTM}, dtype=getattr(torch, dtype))
    quantized = wrapped[0].eval()
    if type(quantized) is torch.nn.LSTM:
        raise RuntimeError(f"torch quantize_dynamic left the LSTM in float32 (dtype {dtype})")
    return quantized


def _module_missing(name: str) -> str | None:
    import importlib.util

    try:
        return None if importlib.util.find_spec(name) is not None else "not installed"
    except ModuleNotFoundError:
        return "not installed"
