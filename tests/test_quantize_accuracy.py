"""The accuracy measurement behind docs/quantization.md (fastlstm/benchmarking/accuracy.py), at tiny sizes:
the random-model table and the Silero VAD pipeline, whose fp32 split must match ONNX Runtime's own
speech probabilities before any quantized figure means anything."""

from __future__ import annotations

import numpy as np
import pytest

from fastlstm.benchmarking import accuracy


def test_random_model_table_and_report():
    rows = accuracy.random_model_table(sizes=[24], layers=[1, 2], steps=60)
    assert [(r["H"], r["layers"]) for r in rows] == [(24, 1), (24, 2)]
    for r in rows:
        for key in ("fp16", "bf16", "int8", "ort_int8", "ort_int8_per_channel"):
            assert 0 < r[key]["rms"] <= r[key]["max_abs"], (key, r[key])
        assert r["int8"]["max_abs"] < r["ort_int8"]["max_abs"] / 5
    text = accuracy.markdown(rows, None)
    assert "| 24 | 2 |" in text and "ORT int8 per-channel max / RMS" in text


def test_silero_pipeline_matches_onnxruntime_and_measures_each_type():
    pytest.importorskip("silero_vad")
    audio, what = accuracy.speech_audio(seconds=4.0)
    assert audio.dtype == np.float32 and audio.size == 4 * accuracy.SAMPLE_RATE and what
    pipe = accuracy.SileroPipeline(audio)
    assert pipe.check() <= 5e-5  # the split (ORT features -> fastlstm LSTM -> NumPy head) is the model
    assert pipe.features.shape == (125, 1, 128)
    result = accuracy.silero_table(seconds=4.0)
    assert result["frames"] == 125
    for key in ("fp16", "bf16", "int8", "ort_int8", "ort_int8_per_channel"):
        assert 0 < result[key]["max_abs"] < 0.5 and result[key]["flipped_at_0.5"] >= 0
    assert result["fp16"]["max_abs"] < result["int8"]["max_abs"]


def test_frames_match_silero_sequence_framing():
    silero = pytest.importorskip("silero_vad.sequence_vad")
    audio = np.random.default_rng(0).standard_normal(5000).astype(np.float32)
    ours = accuracy.frames_of(audio)
    theirs = np.concatenate(list(silero.frame_blocks(audio, 512, 64, max_frames=512)))
    assert np.array_equal(ours, theirs)
