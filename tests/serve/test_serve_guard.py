"""Judge selection for guarded generation."""

from __future__ import annotations

from ptalign.serve.guard import FALLBACK_REFUSALS, load_judge


def test_keyword_judge_falls_back_to_built_in_phrases_without_the_shared_data(monkeypatch, tmp_path):
    monkeypatch.setenv("PTALIGN_SHARED_DATA", str(tmp_path / "missing"))
    judge = load_judge("keyword")
    assert judge.name == "keyword" and judge.keywords.strings == FALLBACK_REFUSALS
    refusal, answer = judge.judge(["q", "q"], ["I'm sorry, I can't help with that.", "Mix flour and water."])
    assert refusal.refusal and not refusal.harmful
    assert answer.harmful and not answer.refusal  # the keyword convention: every non-refusal counts


def test_auto_uses_keyword_when_the_minilm_judge_cannot_be_built(monkeypatch, tmp_path):
    import ptalign.serve.guard as guard

    monkeypatch.setenv("PTALIGN_SHARED_DATA", str(tmp_path / "missing"))
    monkeypatch.setenv("PTALIGN_CACHE", str(tmp_path / "cache"))  # no cached MiniLM judge: it must train
    assert load_judge("auto").name == "keyword"
    monkeypatch.setattr(guard.importlib.util, "find_spec", lambda name: None)  # MiniLM not installed
    assert load_judge("auto").name == "keyword"
