"""The four classic whole-model shapes as small PyTorch modules, and their ONNX exports (both exporters).

    Sentiment   Embedding -> Dropout -> LSTM -> last step (y[-1] / y[:, -1]) or h_n -> Linear -> Sigmoid
    Tagger      Embedding -> (Bi)LSTM -> Linear -> LogSoftmax, per token
    CharLM      Embedding -> LSTM stack -> Linear (logits), per token
    Encoder     Embedding -> LSTM, returns (h_n, c_n);  Decoder: (token, h0, c0) -> Embedding -> LSTM
                -> Linear -> (logits, h_n, c_n)

Weights are seeded and scaled so every layer matters (a saturated LSTM would hide errors).
"""

from __future__ import annotations

import contextlib
import io
import warnings

import torch
from torch import nn


def _seeded(module: nn.Module, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn_like(p) * (0.5 if "weight" in name else 0.3))
    return module.eval()


class Sentiment(nn.Module):
    def __init__(self, vocab, emb, hidden, layers=1, bidirectional=False, batch_first=True, use_state=False):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.drop = nn.Dropout(0.3)
        self.lstm = nn.LSTM(emb, hidden, layers, batch_first=batch_first, bidirectional=bidirectional)
        self.fc = nn.Linear(hidden * (2 if bidirectional else 1), 1)
        self.batch_first, self.bidirectional, self.use_state = batch_first, bidirectional, use_state

    def forward(self, x):
        y, (h, _) = self.lstm(self.drop(self.emb(x)))
        if self.use_state:
            last = torch.cat((h[-2], h[-1]), dim=1) if self.bidirectional else h[-1]
        else:
            last = y[:, -1] if self.batch_first else y[-1]
        return torch.sigmoid(self.fc(last))


class Tagger(nn.Module):
    def __init__(self, vocab, emb, hidden, tags, layers=1, bidirectional=True, batch_first=False):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.lstm = nn.LSTM(emb, hidden, layers, bidirectional=bidirectional, batch_first=batch_first)
        self.fc = nn.Linear(hidden * (2 if bidirectional else 1), tags)

    def forward(self, x):
        y, _ = self.lstm(self.emb(x))
        return torch.log_softmax(self.fc(y), dim=-1)


class CharLM(nn.Module):
    def __init__(self, vocab, emb, hidden, layers=2):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.lstm = nn.LSTM(emb, hidden, layers)
        self.fc = nn.Linear(hidden, vocab)

    def forward(self, x):
        y, _ = self.lstm(self.emb(x))
        return self.fc(y)


class Encoder(nn.Module):
    def __init__(self, vocab, emb, hidden, layers=1):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.lstm = nn.LSTM(emb, hidden, layers)

    def forward(self, x):
        _, (h, c) = self.lstm(self.emb(x))
        return h, c


class Decoder(nn.Module):
    def __init__(self, vocab, emb, hidden, layers=1):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.lstm = nn.LSTM(emb, hidden, layers)
        self.fc = nn.Linear(hidden, vocab)

    def forward(self, x, h0, c0):
        y, (h, c) = self.lstm(self.emb(x), (h0, c0))
        return self.fc(y), h, c


def build(cls, *args, seed=0, **kwargs) -> nn.Module:
    return _seeded(cls(*args, **kwargs), seed)


def export(module: nn.Module, args: tuple, dynamo: bool, outputs=("y",), dynamic: bool = True) -> bytes:
    """torch.onnx.export to bytes, every axis of the token input dynamic (h0 / c0: the batch axis, the same
    as the token input's axis 1); dynamic=False: the exporter's default, every shape fixed to the example's.
    The dynamo exporter gets named dimensions: with Dim.AUTO, torch 2.13 bakes the example's T into the
    Reshape after a time-major LSTM stack (the graph then fails in ONNX Runtime too at any other T)."""
    names = ["x", "h0", "c0"][: len(args)]
    kwargs = {"dynamo": dynamo, "input_names": names, "output_names": list(outputs)}
    x = args[0]
    if not dynamic:
        pass
    elif dynamo:
        dims = [torch.export.Dim(f"x{a}", min=2) for a in range(x.dim())]
        kwargs["dynamic_shapes"] = tuple([dict(enumerate(dims))] + [{1: dims[1]}] * (len(args) - 1))
    else:
        kwargs["dynamic_axes"] = {"x": {a: f"x{a}" for a in range(x.dim())}, **{n: {1: "B"} for n in names[1:]}}
    buf = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        result = torch.onnx.export(module.eval(), args, None if dynamo else buf, **kwargs)
    return result.model_proto.SerializeToString() if dynamo else buf.getvalue()
