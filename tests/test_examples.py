"""The examples run end to end: train in PyTorch, export, `fastlstm convert --verify`, check against PyTorch
(each example exits non-zero above 2e-5), and time the three engines. FASTLSTM_EXAMPLES_SMOKE cuts training
and timing to a sliver (examples/common.py); nothing else changes, so a check that fails here fails for a user."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CASES = {
    "generate.py": (["--tokens", "12"], ("check step() over the same tokens", "tokens/s")),
    "sentiment.py": ([], ("check 512 padded sentences with sequence_lens", "sentences/s")),
    "tagger.py": ([], ("check 256 padded sentences with sequence_lens", "sentences/s")),
    "translate.py": ([], ("check greedy decoding logits", "sequences/s")),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_runs_and_matches_pytorch(name, tmp_path):
    args, expected = CASES[name]
    env = {**os.environ, "FASTLSTM_EXAMPLES_SMOKE": "1", "TMPDIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                          timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for text in expected:
        assert text in proc.stdout, (text, proc.stdout[-2000:])
    assert "FAILED" not in proc.stdout
    assert "fastlstm is" in proc.stdout  # the timing table compares the peers with fastlstm
