import numpy as np
import pytest

from grace.diagnostics import collapse_diagnostics, copies_input, distinct_n, mean_pairwise_cosine


def test_distinct_2_counts_repeated_bigrams_across_rationales():
    assert distinct_n(["a b c", "d e f"]) == 1.0
    # "a b" four times, "b a" twice... : bigrams a-b, b-a, a-b | a-b, b-a, a-b -> 2 distinct of 6
    assert distinct_n(["a b a b", "A B A b"]) == pytest.approx(2 / 6)
    assert distinct_n(["one", ""]) is None


def test_a_copy_is_a_rationale_mostly_made_of_its_input():
    text = "The film follows a young chef who opens a restaurant in Paris."
    assert copies_input("the film follows a young chef who opens a restaurant", text)
    assert copies_input("  THE FILM follows\na young chef ", text)  # case and spacing ignored
    assert not copies_input("A story about cooking, ambition and a city.", text)
    # Short shared runs are not copies: 'a young chef' is under 80 % of this rationale.
    assert not copies_input("It is about a young chef and his rival.", text)
    assert not copies_input("", text)


def test_mean_pairwise_cosine_leaves_out_each_vector_with_itself():
    same = np.tile([[0.6, 0.8]], (3, 1))
    assert mean_pairwise_cosine(same) == pytest.approx(1.0)
    assert mean_pairwise_cosine(np.eye(3)) == pytest.approx(0.0)
    assert mean_pairwise_cosine(np.array([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="two embeddings"):
        mean_pairwise_cosine(np.eye(2)[:1])


def test_collapse_diagnostics_of_rationales_and_of_direct_embeddings():
    texts = ["plot one is long enough", "plot two", "a third plot"]
    rationales = ["```\n```", "plot one is long enough", "a summary of events"]
    found = collapse_diagnostics(texts, rationales, np.eye(3))
    assert found["fence_share"] == pytest.approx(1 / 3)
    assert found["copy_share"] == pytest.approx(0.0)  # the copy sits beside another text
    rationales[1] = "plot two"
    assert collapse_diagnostics(texts, rationales, np.eye(3))["copy_share"] == pytest.approx(1 / 3)
    direct = collapse_diagnostics(texts, None, np.eye(3))
    assert direct["distinct_2"] is None and direct["copy_share"] is None
    assert direct["mean_cosine"] == pytest.approx(0.0)


def test_logged_rollouts_quote_the_logged_step_nearest_each_point(tmp_path):
    import json

    from grace.diagnostics import logged_rollouts

    path = tmp_path / "rationales.jsonl"
    logged = [
        {"step": s, "text": "t", "rationales": [f"a{s}" * 100, f"b{s}", f"c{s}"]} for s in (0, 4, 8)
    ]
    path.write_text("".join(json.dumps(sample) + "\n" for sample in logged))
    quoted = logged_rollouts(path, [0, 5, 10], keep=2, chars=6)
    assert [(q["step"], q["logged_step"]) for q in quoted] == [(0, 0), (5, 4), (10, 8)]
    assert quoted[1]["rollouts"] == ["a4a4a4", "b4"]
    # A tie goes to the earlier logged step.
    assert logged_rollouts(path, [6])[0]["logged_step"] == 4
