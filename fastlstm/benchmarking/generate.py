"""The `generate` rows of `fastlstm bench`: tokens/s of a text-generation loop, batch 1, greedy.

The model is a word / character LM: Embedding (V, E = H) -> one LSTM layer (H) -> Linear (V), fixed-seed
weights. Every engine runs the same weights:
    onnxruntime  the one-step ONNX graph (tok (T, B) int64, h0, c0 -> logits, h, c), fed its own state
    fastlstm     that ONNX graph converted by converters.from_onnx (the whole model: one file), stepped
                 with Engine.step(token, state)
    torch        nn.Embedding + nn.LSTM + nn.Linear holding the same arrays, under inference_mode
One generation step = the model on the last token + argmax of the logits (the same greedy choice for all,
so the loops follow the same tokens). Per token the head reads V x H weights (10 MB at V = 10,000, H =
256): at batch 1 generation is the LSTM step + that GEMV, both memory-bound (docs/performance.md).
"""

from __future__ import annotations

import numpy as np

from .models import ONNX_IR_VERSION, ONNX_OPSET, SEED

GENERATE_STEPS = 24  # tokens of the accuracy check


class GenerateModel:
    """One (V, H) LM: numpy weights, its ONNX bytes and its torch module (built lazily, once)."""

    def __init__(self, vocab: int, hidden: int, seed: int = SEED):
        self.vocab, self.hidden = int(vocab), int(hidden)
        rng = np.random.default_rng([seed, vocab, hidden, 7])
        H, V = self.hidden, self.vocab
        bound = 1.0 / np.sqrt(H)
        draw = lambda *shape: rng.uniform(-bound, bound, shape).astype(np.float32)  # noqa: E731
        self.emb = rng.standard_normal((V, H)).astype(np.float32)
        self.W, self.R, self.b = draw(4 * H, H), draw(4 * H, H), draw(4 * H)  # canonical gates i, f, g, o
        self.fc_w, self.fc_b = draw(V, H), draw(V)
        self._onnx = self._torch = None

    @property
    def head_mib(self) -> float:
        return self.fc_w.nbytes / 2**20

    def onnx_bytes(self) -> bytes:
        if self._onnx is None:
            from onnx import TensorProto, helper, numpy_helper

            H, V = self.hidden, self.vocab
            onnx_order = [0, 3, 1, 2]  # canonical (i, f, g, o) -> ONNX (i, o, f, c)

            def gates(a):
                return a.reshape((4, H) + a.shape[1:])[onnx_order].reshape(a.shape)

            inits = [numpy_helper.from_array(a, name) for name, a in (
                ("emb", self.emb), ("W", gates(self.W)[None]), ("R", gates(self.R)[None]),
                ("B", np.concatenate([gates(self.b), np.zeros(4 * H, np.float32)])[None]),
                ("fc_w", np.ascontiguousarray(self.fc_w.T)), ("fc_b", self.fc_b),
                ("axis1", np.array([1], np.int64)))]
            nodes = [helper.make_node("Gather", ["emb", "tok"], ["x"]),
                     helper.make_node("LSTM", ["x", "W", "R", "B", "", "h0", "c0"], ["Y", "h", "c"], hidden_size=H),
                     helper.make_node("Squeeze", ["Y", "axis1"], ["y"]),
                     helper.make_node("MatMul", ["y", "fc_w"], ["z"]),
                     helper.make_node("Add", ["z", "fc_b"], ["logits"])]
            f32 = TensorProto.FLOAT
            graph = helper.make_graph(
                nodes, "lm_step",
                [helper.make_tensor_value_info("tok", TensorProto.INT64, ["T", "B"]),
                 helper.make_tensor_value_info("h0", f32, [1, "B", H]),
                 helper.make_tensor_value_info("c0", f32, [1, "B", H])],
                [helper.make_tensor_value_info("logits", f32, ["T", "B", V]),
                 helper.make_tensor_value_info("h", f32, [1, "B", H]),
                 helper.make_tensor_value_info("c", f32, [1, "B", H])], inits)
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
            model.ir_version = ONNX_IR_VERSION
            self._onnx = model.SerializeToString()
        return self._onnx

    def torch_module(self):
        if self._torch is None:
            import torch

            H, V = self.hidden, self.vocab
            emb, lstm, fc = torch.nn.Embedding(V, H), torch.nn.LSTM(H, H), torch.nn.Linear(H, V)
            with torch.no_grad():
                emb.weight.copy_(torch.from_numpy(self.emb))
                lstm.weight_ih_l0.copy_(torch.from_numpy(self.W))
                lstm.weight_hh_l0.copy_(torch.from_numpy(self.R))
                lstm.bias_ih_l0.copy_(torch.from_numpy(self.b))
                lstm.bias_hh_l0.zero_()
                fc.weight.copy_(torch.from_numpy(self.fc_w))
                fc.bias.copy_(torch.from_numpy(self.fc_b))
            self._torch = (emb.eval(), lstm.eval(), fc.eval())
        return self._torch


class Generator:
    """One engine's generation loop: reset(), next_token() -> int, logits(token) -> (V,) float32."""

    def __init__(self, engine: str, model: GenerateModel, threads: int):
        self.engine, self.model = engine, model
        getattr(self, f"_prepare_{engine}")(threads)
        self.reset()

    def context(self):
        import contextlib

        if self.engine == "torch":
            return self.torch.inference_mode()
        return contextlib.nullcontext()

    def next_token(self) -> int:
        self.token = int(np.argmax(self.logits(self.token)))
        return self.token

    # ---- fastlstm --------------------------------------------------------------------------------------
    def _prepare_fastlstm(self, threads):
        import warnings

        import converters
        import fastlstm
        from fastlstm.threads import MAX_THREADS

        from .peers import set_blas_threads

        fastlstm.set_num_threads(min(threads, MAX_THREADS))
        set_blas_threads(threads)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a note would mean the whole model was not converted
            spec = converters.from_onnx(self.model.onnx_bytes())
        self.eng = fastlstm.Engine(spec)

    def _reset_fastlstm(self):
        self.state = self.eng.new_state(1)

    def _logits_fastlstm(self, token):
        return self.eng.step(token, self.state)

    # ---- ONNX Runtime ------------------------------------------------------------------------------------
    def _prepare_onnxruntime(self, threads):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(self.model.onnx_bytes(), options, providers=["CPUExecutionProvider"])
        self.tok = np.zeros((1, 1), np.int64)

    def _reset_onnxruntime(self):
        self.h = np.zeros((1, 1, self.model.hidden), np.float32)
        self.c = self.h.copy()

    def _logits_onnxruntime(self, token):
        self.tok[0, 0] = token
        logits, self.h, self.c = self.session.run(None, {"tok": self.tok, "h0": self.h, "c0": self.c})
        return logits[0, 0]

    # ---- PyTorch -----------------------------------------------------------------------------------------
    def _prepare_torch(self, threads):
        import torch

        torch.set_num_threads(threads)
        self.torch = torch
        self.emb, self.lstm, self.fc = self.model.torch_module()
        self.tok = torch.zeros((1, 1), dtype=torch.long)

    def _reset_torch(self):
        zeros = self.torch.zeros(1, 1, self.model.hidden)
        self.hc = (zeros, zeros.clone())

    def _logits_torch(self, token):
        self.tok[0, 0] = token
        y, self.hc = self.lstm(self.emb(self.tok), self.hc)
        return self.fc(y)[0, 0].numpy()

    def reset(self):
        self.token = 0
        getattr(self, f"_reset_{self.engine}")()

    def logits(self, token):
        return getattr(self, f"_logits_{self.engine}")(token)


def measure_generate(model: GenerateModel, engines: list[str], status: dict, threads: int, cfg) -> dict:
    """Tokens/s of each available engine's loop (interleaved rounds, medians) and max |logits - ORT| over a
    GENERATE_STEPS greedy run."""
    from . import measure

    rec = {"mode": "generate", "V": model.vocab, "H": model.hidden, "B": 1, "threads": threads,
           "head_mib": model.head_mib, "engines": {}}
    loops = {}
    for name in engines:
        if status.get(name):
            rec["engines"][name] = {"status": status[name]}
            continue
        try:
            loops[name] = Generator(name, model, threads)
        except Exception as exc:  # this configuration only
            rec["engines"][name] = {"status": f"failed: {type(exc).__name__}: {exc}"}
    candidates = {name: measure.Candidate(g.next_token, g.context) for name, g in loops.items()}
    timings = measure.interleaved(candidates, cfg.rounds, cfg.block_s, seed=model.hidden + model.vocab + threads,
                                  budget_s=cfg.budget_s, min_rounds=cfg.min_rounds)
    for name, timing in timings.items():
        entry = timing.to_json()
        entry["us_per_token"] = entry["median_us"]
        entry["tokens_per_s"] = 1e6 / entry["median_us"]
        rec["engines"][name] = entry
    _accuracy(rec, loops)
    return rec


def _accuracy(rec: dict, loops: dict) -> None:
    """Feed every engine ONNX Runtime's greedy tokens; max |logits - ONNX Runtime's| over the run."""
    ref_loop = loops.get("onnxruntime")
    rec["reference"] = "onnxruntime" if ref_loop else None
    if ref_loop is None:
        return
    ref_loop.reset()
    tokens, ref = [0], []
    for _ in range(GENERATE_STEPS):
        ref.append(np.asarray(ref_loop.logits(tokens[-1]), np.float64))
        tokens.append(int(np.argmax(ref[-1])))
    for name, loop in loops.items():
        loop.reset()
        with loop.context():
            ours = [np.asarray(loop.logits(t), np.float64) for t in tokens[:-1]]
        rec["engines"][name]["max_abs_err"] = float(max(np.max(np.abs(a - b)) for a, b in zip(ours, ref, strict=True)))
        loop.reset()
