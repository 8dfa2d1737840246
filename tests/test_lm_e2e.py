"""The end-to-end training check (bench/lm_e2e.py) on a tiny configuration: same seed, torch's loss vs loglik's."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from loglik.bench import lm_e2e  # noqa: E402

import loglik  # noqa: E402

pytestmark = pytest.mark.skipif(not loglik.has_compiled(), reason="loglik._C not built")


def test_corpus_is_python_source():
    text = lm_e2e.corpus_text()
    assert "def " in text and len(text) > 10_000
    ids, v = lm_e2e.tokenize(text, "words", 512)
    assert v == 512 and max(ids) < v and min(ids) >= 0
    ids, v = lm_e2e.tokenize(text[:1000], "bytes", 0)
    assert v == 256 and len(ids) >= 1000


def test_loss_curves_agree_tiny():
    cfg = lm_e2e.config(True, steps=6, batch=4, seq_len=32, vocab_size=1024, d_model=64)
    ref = lm_e2e.train("torch", cfg)
    ours = lm_e2e.train("loglik", cfg)
    assert len(ref["losses"]) == 6
    assert ref["losses"][-1] < ref["losses"][0]  # it trains
    for a, b in zip(ref["losses"], ours["losses"], strict=True):
        assert abs(a - b) <= 1e-4 * abs(a)
