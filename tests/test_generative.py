import json
import math

import pytest

from grace.evaluation.generative import (
    INSTRUCTIONS,
    answer_instructions,
    contains_answer,
    generative_check,
    judge,
    perplexity,
)


def test_perplexity_is_finite_and_ignores_padding(tiny):
    model, tokenizer = tiny
    value = perplexity(model, tokenizer, ["hello world", "a longer sentence of some words"])
    assert 1.0 < value < 10_000 and math.isfinite(value)
    # Batched with padding or one at a time: the same token-weighted mean.
    one_by_one = perplexity(
        model, tokenizer, ["hello world", "a longer sentence of some words"], batch_size=1
    )
    assert value == pytest.approx(one_by_one, rel=2e-3)  # float32 sums in another order


def test_answers_count_only_as_whole_words():
    assert contains_answer("The capital of France is Paris.", ["paris"])
    assert contains_answer("A week has 7 days", ["7", "seven"])
    assert not contains_answer("It freezes at -18.0000000000001 Celsius", ["0", "zero"])
    assert not contains_answer("Parisian food", ["paris"])


def test_replies_are_judged_one_per_instruction(tiny):
    model, tokenizer = tiny
    questions = [("say paris", ["paris"], ["rome"]), ("say blue", ["blue"], ["red"])]
    replies = answer_instructions(model, tokenizer, questions, max_new_tokens=4)
    assert [r["instruction"] for r in replies] == ["say paris", "say blue"]
    for reply, (_, answers, wrong) in zip(replies, questions, strict=True):
        assert reply["passed"] == judge(reply["reply"], answers, wrong)


def test_a_right_answer_beside_a_wrong_one_fails():
    _, answers, wrong = next(i for i in INSTRUCTIONS if "largest" in i[0])
    assert judge("Jupiter is the largest planet.", answers, wrong)
    assert not judge("Jupiter, but it's actually Saturn.", answers, wrong)


@pytest.mark.smollm2
def test_smollm2_answers_most_instructions(smollm2):
    report = generative_check(*smollm2)
    assert report["instructions_passed"] >= 0.5  # base SmolLM2 measured 0.7 (7 of 10)
    assert 10 < report["perplexity"] < 100  # base SmolLM2 on Lee documents: ~40


def test_generative_checks_are_kept_under_the_model_identity(tmp_path, monkeypatch):
    from grace.evaluation import generative

    checked = []
    monkeypatch.setattr("grace.models.load_model", lambda model: (model, None))
    monkeypatch.setattr(generative, "generative_check", lambda m, t: checked.append(m) or {"p": 1})
    run = tmp_path / "run"
    run.mkdir()
    (run / "grace_config.json").write_text(json.dumps({"settings_hash": "aaaa"}))
    models, path = {"base": "tiny-random", "trained": str(run)}, tmp_path / "generative.json"
    assert generative.cached_generative_checks(models, path)["trained"]["model"] == "aaaa"
    generative.cached_generative_checks(models, path)  # unchanged: read back
    assert checked == ["tiny-random", str(run)]
    (run / "grace_config.json").write_text(json.dumps({"settings_hash": "bbbb"}))  # retrained
    assert generative.cached_generative_checks(models, path)["trained"]["model"] == "bbbb"
    assert checked == ["tiny-random", str(run), str(run)]
