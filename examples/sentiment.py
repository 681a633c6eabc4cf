"""A sentiment classifier on padded batches with sequence_lens, end to end in one command:

  train Embedding -> LSTM -> h_n -> Linear -> Sigmoid in PyTorch (packed sequences) on a toy corpus made
  here (sentences of neutral words with a few positive / negative ones; the label is the majority), export
  it to ONNX, convert it with `fastlstm convert --verify`, then classify padded batches with
  `Engine.run(ids, sequence_lens=lens, batch_first=True)`: each row's answer is taken at its last valid
  token, exactly what PyTorch's pack_padded_sequence gives. Checked against PyTorch; timed against PyTorch
  (packed batches) and ONNX Runtime (its graph has no lengths, so one unpadded sentence per call).

    python examples/sentiment.py
"""

from __future__ import annotations

import time

import numpy as np
import torch
from common import SMOKE, check, convert, export_onnx, ort_session, per_second, set_threads, table
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

POSITIVE = "good great fine happy love excellent nice wonderful superb pleasant".split()
NEGATIVE = "bad awful poor sad hate terrible nasty horrible dull boring".split()
NEUTRAL = ("the a movie film plot actor scene story music it was is and but very quite really of this that "
           "with for on at one two time end start".split())
WORDS = ["<pad>", *POSITIVE, *NEGATIVE, *NEUTRAL]
INDEX = {w: i for i, w in enumerate(WORDS)}


def make_data(n: int, rng, max_len: int = 24):
    """(ids (n, max_len) 0-padded, lengths (n,), labels (n,)): the label is 1 when positives outnumber negatives."""
    ids, lens, labels = np.zeros((n, max_len), np.int64), np.zeros(n, np.int64), np.zeros(n, np.float32)
    for k in range(n):
        length = rng.integers(7, max_len + 1)  # room for up to 3 + 3 sentiment words
        pos, neg = rng.integers(0, 4), rng.integers(0, 4)
        while pos == neg:
            pos, neg = rng.integers(0, 4), rng.integers(0, 4)
        words = list(rng.choice(NEUTRAL, length - pos - neg)) + list(rng.choice(POSITIVE, pos)) + list(
            rng.choice(NEGATIVE, neg))
        rng.shuffle(words)
        ids[k, :length] = [INDEX[w] for w in words]
        lens[k], labels[k] = length, float(pos > neg)
    return ids, lens, labels


class Sentiment(nn.Module):
    def __init__(self, vocab: int, emb: int = 16, hidden: int = 48):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb, padding_idx=0)
        self.lstm = nn.LSTM(emb, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, 1)

    def forward(self, x, lengths=None):  # x (B, T) -> P(positive) (B, 1)
        e = self.emb(x)
        if lengths is not None:  # training and the PyTorch reference: the state at each row's last token
            e = pack_padded_sequence(e, torch.as_tensor(lengths), batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(e)
        return torch.sigmoid(self.fc(h[-1]))


def main() -> None:
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    torch.set_num_threads(2)
    x_train, len_train, y_train = make_data(128 if SMOKE else 4000, rng)
    model = Sentiment(len(WORDS))
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    t0 = time.perf_counter()
    for epoch in range(1 if SMOKE else 2):
        for s in range(0, len(x_train), 64):
            p = model(torch.as_tensor(x_train[s:s + 64]), len_train[s:s + 64])
            loss = nn.functional.binary_cross_entropy(p[:, 0], torch.as_tensor(y_train[s:s + 64]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"epoch {epoch}: loss {loss.item():.3f} ({time.perf_counter() - t0:.0f} s)")
    model.eval()

    engine = convert(export_onnx(model, (torch.zeros((2, 6), dtype=torch.long),), "sentiment", ("p",)))
    set_threads(1)
    x_test, len_test, y_test = make_data(512, rng)
    with torch.inference_mode():
        ref = model(torch.as_tensor(x_test), len_test).numpy()
    ours, _ = engine.run(x_test, sequence_lens=len_test, batch_first=True)
    check("512 padded sentences with sequence_lens", ours, ref)
    print(f"accuracy on the test sentences: {np.mean((ours[:, 0] > 0.5) == (y_test > 0.5)):.1%}")

    B = 64
    batches = [(x_test[s:s + B], len_test[s:s + B]) for s in range(0, 512, B)]

    def fast():
        for x, lens in batches:
            engine.run(x, sequence_lens=lens, batch_first=True)

    def pytorch():
        with torch.inference_mode():
            for x, lens in batches:
                model(torch.as_tensor(x), lens)

    session = ort_session(export_onnx(model, (torch.zeros((1, 6), dtype=torch.long),), "sentiment_ort", ("p",)))

    def ort():
        for x, n in zip(x_test, len_test, strict=True):
            session.run(None, {"x": x[None, :n]})

    table("Classifying 512 sentences (7-24 tokens), one thread: fastlstm and PyTorch in padded batches of 64",
          "sentences/s", {name: 512 * per_second(f, 1.5, warmup=1) for name, f in
                          (("fastlstm", fast), ("PyTorch", pytorch), ("ONNX Runtime", ort))})


if __name__ == "__main__":
    main()
