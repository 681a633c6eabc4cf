"""Text generation with a character-level LSTM language model, end to end in one command:

  1. train a small char LM (Embedding -> LSTM -> Linear) in PyTorch for about a minute on text that
     ships with this repository (its own README and docs);
  2. export it to ONNX (torch.onnx.export) and convert the whole model with `fastlstm convert --verify`;
  3. check fastlstm against PyTorch (run on a prompt, and step() token by token);
  4. sample text token by token with Engine.step() (temperature, top-k) and time the same generation loop
     in fastlstm, PyTorch and ONNX Runtime (one thread each).

    python examples/generate.py                        # ~1 minute of training, then generation
    python examples/generate.py --train-seconds 10 --tokens 200 --temperature 0.6 --top-k 5
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import time

import numpy as np
import torch
from common import budget_s, check, convert, export_onnx, ort_session, per_second, set_threads, table
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CharLM(nn.Module):
    def __init__(self, vocab: int, emb: int = 32, hidden: int = 128, layers: int = 1):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.lstm = nn.LSTM(emb, hidden, layers)
        self.fc = nn.Linear(hidden, vocab)

    def forward(self, x, state=None):  # x (T, B) -> logits (T, B, V)
        y, state = self.lstm(self.emb(x), state)
        return self.fc(y), state


class StepLM(nn.Module):
    """The same weights as one step with the state as inputs and outputs: what ONNX Runtime streams."""

    def __init__(self, lm: CharLM):
        super().__init__()
        self.lm = lm

    def forward(self, x, h0, c0):
        logits, (h, c) = self.lm(x, (h0, c0))
        return logits, h, c


def corpus() -> str:
    paths = [os.path.join(ROOT, "README.md"), *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))]
    text = "\n\n".join(open(p, encoding="utf-8").read() for p in paths if os.path.exists(p))
    text = re.sub(r"^\|.*\|$", "", text, flags=re.MULTILINE)  # markdown tables: mostly digits and padding
    return re.sub(r"\n{3,}", "\n\n", re.sub(r"[ \t]+", " ", text))


def train(text: str, seconds: float, seed: int = 0):
    chars = sorted(set(text))
    index = {ch: i for i, ch in enumerate(chars)}
    data = torch.tensor([index[ch] for ch in text])
    torch.manual_seed(seed)
    model = CharLM(len(chars))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    T, B, steps, t0 = 64, 32, 0, time.perf_counter()
    print(f"training a {len(chars)}-character LM on {len(text):,} characters of this repository's docs "
          f"for {seconds:.0f} s ...")
    while time.perf_counter() - t0 < seconds:
        starts = torch.randint(0, len(data) - T - 1, (B,))
        batch = torch.stack([data[s:s + T + 1] for s in starts], dim=1)  # (T+1, B)
        logits, _ = model(batch[:-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, len(chars)), batch[1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        steps += 1
        if steps % 50 == 0:
            print(f"  step {steps:5d}  loss {loss.item():.3f}  ({time.perf_counter() - t0:.0f} s)")
    return model.eval(), chars


def sample(logits: np.ndarray, temperature: float, top_k: int, rng: np.random.Generator) -> int:
    """One token from the top_k logits at this temperature (the same for every engine)."""
    logits = np.asarray(logits, np.float64) / temperature
    top = np.argpartition(-logits, top_k - 1)[:top_k]
    cum = np.cumsum(np.exp(logits[top] - logits[top].max()))
    return int(top[min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), top_k - 1)])


def generate(next_logits, reset, prompt: list[int], n: int, temperature, top_k, seed) -> list[int]:
    """Feed the prompt, then sample n tokens; next_logits(token) -> (V,) advances the engine by one."""
    reset()
    rng = np.random.default_rng(seed)
    for tok in prompt:
        logits = next_logits(tok)
    out = []
    for _ in range(n):
        out.append(sample(logits, temperature, top_k, rng))
        logits = next_logits(out[-1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-seconds", type=float, default=60.0)
    ap.add_argument("--tokens", type=int, default=400, help="characters to generate")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--prompt", default="fastlstm ")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    torch.set_num_threads(2)  # training may use both cores; inference below is timed on one
    model, chars = train(corpus(), budget_s(args.train_seconds))
    V, L, H = len(chars), model.lstm.num_layers, model.lstm.hidden_size
    index = {ch: i for i, ch in enumerate(chars)}
    prompt = [index.get(ch, 0) for ch in args.prompt]

    engine = convert(export_onnx(model, (torch.zeros((5, 2), dtype=torch.long),), "char_lm", ("logits",)))
    step_onnx = export_onnx(StepLM(model), (torch.zeros((1, 1), dtype=torch.long), torch.zeros(L, 1, H),
                                            torch.zeros(L, 1, H)), "char_lm_step", ("logits", "h", "c"))
    set_threads(1)

    # ---- check against PyTorch: a batch of sequences (run) and token by token (step) --------------------
    x = np.random.default_rng(0).integers(0, V, (40, 4))
    with torch.inference_mode():
        ref, _ = model(torch.as_tensor(x))
    check("run on (40, 4) token ids", engine.run(x)[0], ref.numpy())
    state = engine.new_state(4)
    check("step() over the same tokens", np.stack([engine.step(x[t], state) for t in range(40)]), ref.numpy())

    # ---- the three engines' generation loops: the model on the last token, then sampling --------------
    st = {"fastlstm": engine.new_state(1)}

    def fast_reset():
        st["fastlstm"].zero_()

    def fast_next(tok):
        return engine.step(tok, st["fastlstm"])

    tok_t = torch.zeros((1, 1), dtype=torch.long)

    def torch_reset():
        st["torch"] = None

    def torch_next(tok):
        tok_t[0, 0] = tok
        with torch.inference_mode():
            logits, st["torch"] = model(tok_t, st["torch"])
        return logits[0, 0].numpy()

    session, tok_o = ort_session(step_onnx), np.zeros((1, 1), np.int64)

    def ort_reset():
        st["ort"] = (np.zeros((L, 1, H), np.float32), np.zeros((L, 1, H), np.float32))

    def ort_next(tok):
        tok_o[0, 0] = tok
        logits, h, c = session.run(None, {"x": tok_o, "h0": st["ort"][0], "c0": st["ort"][1]})
        st["ort"] = (h, c)
        return logits[0, 0]

    engines = {"fastlstm": (fast_next, fast_reset), "PyTorch": (torch_next, torch_reset),
               "ONNX Runtime": (ort_next, ort_reset)}
    texts, loop_rates, step_rates = {}, {}, {}
    for name, (next_logits, reset) in engines.items():
        generate(next_logits, reset, prompt, 20, args.temperature, args.top_k, args.seed)  # warm up
        t0 = time.perf_counter()
        texts[name] = generate(next_logits, reset, prompt, args.tokens, args.temperature, args.top_k, args.seed)
        loop_rates[name] = (len(prompt) + args.tokens) / (time.perf_counter() - t0)
        reset()
        step_rates[name] = per_second(lambda f=next_logits: f(3), seconds=1.5)

    print(f"\n--- fastlstm, {args.tokens} characters, temperature {args.temperature}, top-k {args.top_k} ---")
    print(args.prompt + "".join(chars[t] for t in texts["fastlstm"]))
    print("---")
    for name in ("PyTorch", "ONNX Runtime"):
        same = texts[name] == texts["fastlstm"]
        print(f"{name} sampled {'the same text' if same else 'a different text (a near-tie of logits)'} "
              f"with the same random seed")
    what = f"batch 1, one thread, V={V}, {L}-layer LSTM, H={H}"
    table(f"The model alone ({what}): one step() per token", "tokens/s", step_rates)
    table(f"The generation loop ({what}): step() + top-k sampling in NumPy (the same for every engine)",
          "tokens/s", loop_rates)


if __name__ == "__main__":
    main()
