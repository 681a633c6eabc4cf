"""Encoder-decoder greedy decoding, end to end in one command: the encoder's run() returns a State, and that
State starts the decoder's step() loop.

  a toy "translation" made here: reverse a sequence of digits. Train an encoder (Embedding -> LSTM, keeping
  (h_n, c_n)) and a decoder (Embedding -> LSTM -> Linear, one step: (token, h0, c0) -> (logits, h, c)) in
  PyTorch, export both to ONNX, convert both with `fastlstm convert --verify`, then decode greedily:

      _, state = encoder.run(source_ids)              # State (layers, 1, B, H)
      token = BOS
      while ...: logits = decoder.step(token, state)  # state advances in place
                 token = logits.argmax(-1)

  Checked against PyTorch's own greedy decoding (same tokens, logits within 2e-5); timed against PyTorch
  and ONNX Runtime (encoder session + decoder session fed its state).

    python examples/translate.py
"""

from __future__ import annotations

import time

import numpy as np
import torch
from common import budget_s, check, convert, export_onnx, ort_session, per_second, set_threads, table
from torch import nn

PAD, BOS, EOS, DIGITS = 0, 1, 2, 10
V, E, H, L = 3 + DIGITS, 16, 96, 1


def make_pairs(n, rng, min_len=3, max_len=9):
    """source (T, n) time-major, 0-padded on the left (so every encoder ends on a real digit); target
    (T + 1, n) = the reversed digits then EOS, 0-padded on the right."""
    src, tgt = np.zeros((max_len, n), np.int64), np.zeros((max_len + 1, n), np.int64)
    for k in range(n):
        digits = 3 + rng.integers(0, DIGITS, rng.integers(min_len, max_len + 1))
        src[max_len - len(digits):, k] = digits
        tgt[: len(digits), k] = digits[::-1]
        tgt[len(digits), k] = EOS
    return src, tgt


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.lstm = nn.Embedding(V, E), nn.LSTM(E, H, L)

    def forward(self, x):  # (T, B) -> h_n, c_n (L, B, H)
        _, (h, c) = self.lstm(self.emb(x))
        return h, c


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.lstm, self.fc = nn.Embedding(V, E), nn.LSTM(E, H, L), nn.Linear(H, V)

    def forward(self, x, h0, c0):  # (T, B) tokens -> logits (T, B, V), h, c
        y, (h, c) = self.lstm(self.emb(x), (h0, c0))
        return self.fc(y), h, c


def train(seconds, rng):
    enc, dec = Encoder(), Decoder()
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=5e-3)
    t0, steps = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        src, tgt = make_pairs(64, rng)
        h, c = enc(torch.as_tensor(src))
        inputs = torch.as_tensor(np.concatenate([np.full((1, 64), BOS), tgt[:-1]]))  # teacher forcing
        logits, _, _ = dec(inputs, h, c)
        loss = nn.functional.cross_entropy(logits.reshape(-1, V), torch.as_tensor(tgt).reshape(-1), ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
        if steps % 100 == 0:
            print(f"  step {steps}: loss {loss.item():.3f} ({time.perf_counter() - t0:.0f} s)")
    return enc.eval(), dec.eval()


def greedy(step, state, batch, max_len=10):
    """Tokens (max_len, B) and logits from `step(tokens (B,), state) -> logits (B, V)`."""
    token, tokens, logits = np.full(batch, BOS), [], []
    for _ in range(max_len):
        out = step(token, state)
        token = np.asarray(out).argmax(-1)
        tokens.append(token)
        logits.append(out)
    return np.stack(tokens), np.stack(logits)


def main() -> None:
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    torch.set_num_threads(2)
    print(f"training the encoder-decoder to reverse digit sequences for {budget_s(25.0):.0f} s ...")
    enc, dec = train(budget_s(25.0), rng)
    zeros = torch.zeros(L, 2, H)
    enc_path = export_onnx(enc, (torch.zeros((5, 2), dtype=torch.long),), "encoder", ("h", "c"))
    dec_path = export_onnx(dec, (torch.zeros((1, 2), dtype=torch.long), zeros, zeros + 1), "decoder",
                           ("logits", "h", "c"))
    encoder, decoder = convert(enc_path), convert(dec_path)
    set_threads(1)

    src, tgt = make_pairs(8, rng)

    def fast_decode(src):
        _, state = encoder.run(src)  # the encoder's final State starts the decoder
        return greedy(lambda tok, st: decoder.step(tok, st), state, src.shape[1])

    def torch_decode(src):
        with torch.inference_mode():
            state = list(enc(torch.as_tensor(src)))

            def step(tok, st):
                logits, st[0], st[1] = dec(torch.as_tensor(tok)[None], st[0], st[1])
                return logits[0].numpy()

            return greedy(step, state, src.shape[1])

    enc_s, dec_s = ort_session(enc_path), ort_session(dec_path)

    def ort_decode(src):
        state = list(enc_s.run(None, {"x": src}))

        def step(tok, st):
            logits, st[0], st[1] = dec_s.run(None, {"x": tok[None].astype(np.int64), "h0": st[0], "c0": st[1]})
            return logits[0]

        return greedy(step, state, src.shape[1])

    ours, ours_logits = fast_decode(src)
    ref, ref_logits = torch_decode(src)
    check("greedy decoding logits (8 sequences, 10 steps)", ours_logits, ref_logits)
    print(f"same tokens as PyTorch: {np.array_equal(ours, ref)}")
    n = (tgt != PAD).sum(0)
    correct = np.mean([np.array_equal(ours[: n[k], k], tgt[: n[k], k]) for k in range(8)])
    for k in range(3):
        source = " ".join(str(d - 3) for d in src[:, k] if d)
        out = " ".join(str(d - 3) for d in ours[:, k][: list(ours[:, k]).index(EOS)] if d > 2) \
            if EOS in ours[:, k] else "(no EOS)"
        print(f"  {source:<20} -> {out}")
    print(f"sequences reversed exactly: {correct:.0%}")

    one = src[:, :1]
    table("Decoding one sequence (encoder run + 10 decoder steps), batch 1, one thread", "sequences/s",
          {"fastlstm": per_second(lambda: fast_decode(one)), "PyTorch": per_second(lambda: torch_decode(one)),
           "ONNX Runtime": per_second(lambda: ort_decode(one))})


if __name__ == "__main__":
    main()
