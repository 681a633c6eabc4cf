"""Whole models end to end: PyTorch module -> torch.onnx.export (both exporters) -> `fastlstm convert` (the
CLI's main, in process) -> Engine.run and Engine.step, against PyTorch itself (2e-5 relative).

The four shapes of issue 14: sentiment classifier (padded batches with sequence_lens), tagger (BiLSTM),
character LM (token-by-token step), encoder-decoder (the encoder's State starts the decoder's step loop).
Parameters are few but chosen to cover 1 and 2 layers, uni and bidirectional, batch_first, vocabularies
from 50 to 30,000, batches 1 and 8.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from specs import rel_error
from whole_models import CharLM, Decoder, Encoder, Sentiment, Tagger, build, export

import fastlstm
from fastlstm.cli import main as cli_main

TOL = 2e-5
E, H = 8, 12


def convert(tmp_path, data: bytes, name: str, *flags) -> fastlstm.Engine:
    src, dst = tmp_path / f"{name}.onnx", tmp_path / f"{name}.fastlstm"
    src.write_bytes(data)
    assert cli_main(["convert", str(src), "-o", str(dst), *flags]) == 0
    eng = fastlstm.load(dst)
    assert eng.spec.pre and (eng.spec.post or name.startswith("enc")), "the whole model must be converted"
    return eng


def torch_out(module, *args) -> np.ndarray:
    with torch.no_grad():
        y = module(*(torch.as_tensor(a) for a in args))
    return (y[0] if isinstance(y, tuple) else y).double().numpy()


def padded_batch(rng, V, B, T, batch_first):
    """Token ids with random lengths (row 0 full), 0-padded past each length."""
    lens = rng.integers(1, T + 1, B)
    lens[0] = T
    x = rng.integers(1, V, (B, T))
    for b, n in enumerate(lens):
        x[b, n:] = 0
    return (x if batch_first else x.T.copy()), lens


# ------------------------------------------------------------------------------------------- sentiment

SENTIMENT = [  # exporter, layers, bidirectional, batch_first, h_n head, vocabulary, batch
    pytest.param("torchscript", 1, False, True, False, 50, 8, id="ts-L1-bf-V50-B8"),
    pytest.param("torchscript", 2, True, True, True, 1000, 8, id="ts-L2-bi-hn-V1000-B8"),
    pytest.param("torchscript", 2, False, False, False, 30000, 1, id="ts-L2-tm-V30000-B1"),
    # torch 2.13's dynamo exporter often fixes T (here 5) in the graph of a multi-layer LSTM (the input's T
    # axis, or only a Reshape after the stack: then ONNX Runtime fails at any other T too); the h_n head
    # needs no such Reshape. The engine runs any T either way.
    pytest.param("dynamo", 2, False, False, True, 300, 8, id="dynamo-L2-tm-hn-V300-B8"),
    pytest.param("dynamo", 1, True, True, True, 200, 8, id="dynamo-L1-bi-hn-V200-B8"),
]


@pytest.mark.parametrize("exporter,L,bi,bf,use_state,V,B", SENTIMENT)
def test_sentiment(tmp_path, exporter, L, bi, bf, use_state, V, B):
    model = build(Sentiment, V, E, H, L, bidirectional=bi, batch_first=bf, use_state=use_state, seed=L + 2 * bi)
    example = torch.randint(0, V, (3, 5) if bf else (5, 3))
    eng = convert(tmp_path, export(model, (example,), exporter == "dynamo"), f"sent-{exporter}",
                  *(["--verify"] if B == 8 else []))
    rng = np.random.default_rng(1)
    x, lens = padded_batch(rng, V, B, 9, bf)
    y, _ = eng.run(x, sequence_lens=lens, batch_first=bf)
    assert y.shape == (B, 1)
    for b, n in enumerate(lens):  # PyTorch on each sequence alone, unpadded
        row = x[b:b + 1, :n] if bf else x[:n, b:b + 1]
        assert rel_error(y[b:b + 1], torch_out(model, row)) <= TOL
    if not bi:  # step(): the last step's head output is the classification of the whole sequence
        st = eng.new_state(B)
        for t in range(9):
            y_t = eng.step(x[:, t] if bf else x[t], st)
        assert rel_error(y_t, torch_out(model, x)) <= TOL


# ---------------------------------------------------------------------------------------------- tagger

TAGGER = [  # exporter, layers, bidirectional, batch_first, vocabulary, batch
    pytest.param("torchscript", 2, True, False, 50, 8, id="ts-L2-bi-V50-B8"),
    pytest.param("dynamo", 1, True, True, 3000, 1, id="dynamo-L1-bi-bf-V3000-B1"),
    pytest.param("torchscript", 1, False, True, 500, 1, id="ts-L1-uni-bf-V500-B1"),
]


@pytest.mark.parametrize("exporter,L,bi,bf,V,B", TAGGER)
def test_tagger(tmp_path, exporter, L, bi, bf, V, B):
    model = build(Tagger, V, E, H, 7, L, bidirectional=bi, batch_first=bf, seed=3)
    example = torch.randint(0, V, (3, 5))
    eng = convert(tmp_path, export(model, (example,), exporter == "dynamo"), f"tag-{exporter}")
    rng = np.random.default_rng(2)
    x, lens = padded_batch(rng, V, B, 10, bf)
    y, _ = eng.run(x, sequence_lens=lens, batch_first=bf)
    assert y.shape == ((B, 10, 7) if bf else (10, B, 7))
    for b, n in enumerate(lens):  # the valid steps of each sequence, against PyTorch on it alone
        row = x[b:b + 1, :n] if bf else x[:n, b:b + 1]
        ours = y[b:b + 1, :n] if bf else y[:n, b:b + 1]
        assert rel_error(ours, torch_out(model, row)) <= TOL
    if not bi:
        st = eng.new_state(B)
        steps = np.stack([eng.step(x[:, t], st) for t in range(10)], axis=1)  # (B, T, C)
        assert rel_error(steps, torch_out(model, x)) <= TOL


# ------------------------------------------------------------------------------------------ char LM


@pytest.mark.parametrize("exporter,L,V", [("torchscript", 2, 100), ("dynamo", 1, 10000), ("dynamo", 2, 60)],
                         ids=["ts-L2-V100", "dynamo-L1-V10000", "dynamo-L2-V60"])
def test_char_lm_run_and_generate(tmp_path, exporter, L, V):
    model = build(CharLM, V, E, H, L, seed=4)
    eng = convert(tmp_path, export(model, (torch.randint(0, V, (5, 3)),), exporter == "dynamo"), "lm")
    rng = np.random.default_rng(3)
    x = rng.integers(0, V, (11, 8))
    y, _ = eng.run(x)
    assert rel_error(y, torch_out(model, x)) <= TOL
    # generation: one token at a time from the engine's default stream, greedy; PyTorch on the prefix
    eng.reset()
    tokens = [3]
    for _ in range(12):
        logits = eng.step(tokens[-1])
        tokens.append(int(np.argmax(logits)))
    ref = torch_out(model, np.array(tokens[:-1])[:, None])[:, 0]  # (T, V) per-step logits
    assert [int(np.argmax(r)) for r in ref] == tokens[1:]
    assert rel_error(logits, ref[-1]) <= TOL


# ------------------------------------------------------------------------------------ encoder-decoder


@pytest.mark.parametrize("exporter,L,B", [("torchscript", 2, 8), ("dynamo", 1, 1)], ids=["ts-L2-B8", "dynamo-L1-B1"])
def test_encoder_decoder_greedy(tmp_path, exporter, L, B):
    V = 40
    enc, dec = build(Encoder, V, E, H, L, seed=5), build(Decoder, V, E, H, L, seed=6)
    dynamo = exporter == "dynamo"
    h0, c0 = torch.zeros(L, 3, H), torch.ones(L, 3, H)  # two tensors: dynamo would merge one passed twice
    enc_eng = convert(tmp_path, export(enc, (torch.randint(0, V, (5, 3)),), dynamo, ("h", "c")), "enc")
    dec_eng = convert(tmp_path, export(dec, (torch.randint(0, V, (2, 3)), h0, c0), dynamo, ("y", "h", "c")), "dec")
    assert dec_eng.spec.source["model"]["state_inputs"] == {"h": "h0", "c": "c0"}
    src = np.random.default_rng(4).integers(0, V, (9, B))
    _, state = enc_eng.run(src)  # the encoder's final State starts the decoder
    with torch.no_grad():
        h, c = enc(torch.as_tensor(src))
    tok = np.zeros(B, np.int64)
    for _ in range(6):
        logits = dec_eng.step(tok, state)
        with torch.no_grad():
            ref, h, c = dec(torch.as_tensor(tok[None]), h, c)
        assert rel_error(logits, ref[0].double().numpy()) <= TOL
        tok = logits.argmax(-1)
        assert np.array_equal(tok, ref[0].argmax(-1).numpy())
    assert rel_error(state.h.reshape(L, B, H), h.double().numpy()) <= TOL


# ------------------------------------------------------------------------------------ from_torch


def test_from_torch_module_with_example_input_and_verify():
    """A module that is more than an nn.LSTM converts whole through an in-memory export; verify() runs the
    module itself. A state_dict cannot describe the topology: example_input with one is an error."""
    import converters

    model = build(Sentiment, 80, E, H, 2, batch_first=True, seed=8)
    example = torch.randint(0, 80, (3, 6))
    spec = converters.from_torch(model, example_input=example)
    assert [type(x).__name__ for x in spec.pre + spec.post] == ["Embedding", "SelectLast", "Linear"]
    assert spec.source["format"] == "torch" and spec.source["module"] == "Sentiment"
    eng = fastlstm.Engine(spec)
    x = np.random.default_rng(5).integers(0, 80, (4, 11))
    assert rel_error(eng.run(x, batch_first=True)[0], torch_out(model, x)) <= TOL
    measured = converters.verify(model, spec, eng)
    assert measured["runtime"].startswith("torch") and measured["max_rel_error"] <= TOL
    with pytest.raises(fastlstm.ConversionError, match="holds the weights but not the model's topology"):
        converters.from_torch(model.state_dict(), example_input=example)
    lstm_only = converters.from_torch(model)  # no example: the LSTM alone, as before
    assert lstm_only.pre == [] and lstm_only.num_layers == 2
