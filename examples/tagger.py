"""A BiLSTM part-of-speech tagger, end to end in one command (the shape of PyTorch's sequence-models
tutorial: Embedding -> bidirectional LSTM -> Linear -> LogSoftmax per token):

  train it on sentences made here from a tiny grammar (some words are a noun or a verb depending on where
  they stand, so the tagger needs both directions of context), export it to ONNX, convert it with
  `fastlstm convert --verify`, tag padded batches with `Engine.run(ids, sequence_lens=lens)` (the reverse
  direction runs over each sentence's own tokens only), check against PyTorch, time it against PyTorch and
  ONNX Runtime.

    python examples/tagger.py
"""

from __future__ import annotations

import time

import numpy as np
import torch
from common import SMOKE, check, convert, export_onnx, ort_session, per_second, set_threads, table
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

TAGS = ["PAD", "DET", "ADJ", "NOUN", "VERB", "ADV"]
LEXICON = {"DET": "the a every this".split(), "ADJ": "big small red quick lazy old".split(),
           "NOUN": "dog cat fox bird man woman house tree".split(), "VERB": "sees chases likes finds hears".split(),
           "ADV": "often quietly today".split(), "NOUN|VERB": "runs walks watches".split()}  # ambiguous words
WORDS = ["<pad>", *sorted({w for words in LEXICON.values() for w in words})]
INDEX = {w: i for i, w in enumerate(WORDS)}


def noun_phrase(rng):
    words = [(rng.choice(LEXICON["DET"]), "DET")]
    words += [(rng.choice(LEXICON["ADJ"]), "ADJ") for _ in range(rng.integers(0, 3))]
    noun = rng.choice(LEXICON["NOUN"] + LEXICON["NOUN|VERB"])  # "the walks" is a noun
    return words + [(noun, "NOUN")]


def sentence(rng):
    """DET ADJ* NOUN VERB [ADV] DET ADJ* NOUN: the ambiguous words are verbs after a noun phrase."""
    verb = rng.choice(LEXICON["VERB"] + LEXICON["NOUN|VERB"])
    words = noun_phrase(rng) + [(verb, "VERB")]
    if rng.random() < 0.4:
        words.append((rng.choice(LEXICON["ADV"]), "ADV"))
    return words + noun_phrase(rng)


def make_data(n, rng, max_len=16):
    ids, tags, lens = np.zeros((max_len, n), np.int64), np.zeros((max_len, n), np.int64), np.zeros(n, np.int64)
    for k in range(n):
        s = sentence(rng)[:max_len]
        ids[: len(s), k] = [INDEX[w] for w, _ in s]
        tags[: len(s), k] = [TAGS.index(t) for _, t in s]
        lens[k] = len(s)
    return ids, tags, lens  # time-major (T, B)


class Tagger(nn.Module):
    def __init__(self, vocab, tags, emb=16, hidden=32):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb, padding_idx=0)
        self.lstm = nn.LSTM(emb, hidden, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, tags)

    def forward(self, x, lengths=None):  # x (T, B) -> log P(tag) (T, B, tags)
        e = self.emb(x)
        if lengths is None:
            y, _ = self.lstm(e)
        else:  # the reverse direction must start at each sentence's own last word
            packed = pack_padded_sequence(e, torch.as_tensor(lengths), enforce_sorted=False)
            y, _ = pad_packed_sequence(self.lstm(packed)[0], total_length=x.shape[0])
        return torch.log_softmax(self.fc(y), dim=-1)


def main() -> None:
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    torch.set_num_threads(2)
    x_train, t_train, len_train = make_data(128 if SMOKE else 3000, rng)
    model = Tagger(len(WORDS), len(TAGS))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    t0 = time.perf_counter()
    for epoch in range(1 if SMOKE else 2):
        for s in range(0, x_train.shape[1], 64):
            logp = model(torch.as_tensor(x_train[:, s:s + 64]), len_train[s:s + 64])
            target = torch.as_tensor(t_train[:, s:s + 64]).reshape(-1)
            loss = nn.functional.nll_loss(logp.reshape(-1, len(TAGS)), target, ignore_index=0)
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"epoch {epoch}: loss {loss.item():.3f} ({time.perf_counter() - t0:.0f} s)")
    model.eval()

    engine = convert(export_onnx(model, (torch.zeros((6, 2), dtype=torch.long),), "tagger", ("logp",)))
    set_threads(1)
    x, tags, lens = make_data(256, rng)
    with torch.inference_mode():
        ref = model(torch.as_tensor(x), lens).numpy()
    ours, _ = engine.run(x, sequence_lens=lens)
    valid = np.arange(x.shape[0])[:, None] < lens[None, :]
    check("256 padded sentences with sequence_lens (valid tokens)", ours[valid], ref[valid])
    print(f"tagging accuracy: {np.mean(ours.argmax(-1)[valid] == tags[valid]):.1%}")
    words = [WORDS[i] for i in x[: lens[0], 0]]
    print("example:", " ".join(f"{w}/{TAGS[t]}" for w, t in zip(words, ours[: lens[0], 0].argmax(-1), strict=True)))

    batches = [(x[:, s:s + 64], lens[s:s + 64]) for s in range(0, 256, 64)]
    session = ort_session(export_onnx(model, (torch.zeros((6, 1), dtype=torch.long),), "tagger_ort", ("logp",)))

    def fast():
        for xb, lb in batches:
            engine.run(xb, sequence_lens=lb)

    def pytorch():
        with torch.inference_mode():
            for xb, lb in batches:
                model(torch.as_tensor(xb), lb)

    def ort():  # no lengths in the exported graph: one unpadded sentence per call
        for k in range(256):
            session.run(None, {"x": x[: lens[k], k:k + 1]})

    table("Tagging 256 sentences, one thread: fastlstm and PyTorch in padded batches of 64", "sentences/s",
          {name: 256 * per_second(f, 1.5, warmup=1) for name, f in
           (("fastlstm", fast), ("PyTorch", pytorch), ("ONNX Runtime", ort))})


if __name__ == "__main__":
    main()
