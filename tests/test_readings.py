"""The generated verdicts of the notebooks: chance levels, noise bands and their sentences."""

import math

import numpy as np
import pandas as pd
import pytest

from grace.book.readings import (
    describe_cancellation,
    describe_generative,
    describe_margins,
    describe_pooling,
    describe_rollouts,
    describe_separation,
    mean_and_noise,
    pair_margin,
)
from grace.evaluation.noise import Reports, length_changes
from grace.evaluation.results import (
    PAPER_COMPARISONS,
    Difference,
    Estimate,
    chance_margins,
    chance_table,
    changes_against,
    count_verdicts,
    describe_chance,
    describe_change,
    describe_comparisons,
    difference,
    estimate,
    means_note,
    paper_comparisons,
    query_noise,
)
from grace.evaluation.tasks import (
    OFFLINE_TASKS,
    RTReviewPlotReranking,
    RTReviewPlotRetrieval,
    chance_level,
    random_average_precision,
    random_ndcg_at_10,
    random_v_measure,
    task_overview,
)


def test_random_ranking_formulas_match_simulation():
    rng = np.random.default_rng(0)
    ranks = rng.integers(1, 101, 200_000)  # the one relevant document among 100, at random
    simulated = np.where(ranks <= 10, 1 / np.log2(1 + ranks), 0).mean()
    assert random_ndcg_at_10(100) == pytest.approx(simulated, abs=2e-3)
    assert random_ndcg_at_10(3) == pytest.approx((1 + 1 / math.log2(3) + 0.5) / 3)
    # One relevant among 5: MAP = H_5 / 5 = 45.67 %.
    assert random_average_precision(5, 1) == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4 + 1 / 5) / 5)
    labels = np.array([1] * 4 + [0] * 6)
    simulated = []
    for _ in range(20_000):
        order = labels[rng.permutation(10)]
        hits = np.cumsum(order)
        simulated.append((hits / np.arange(1, 11))[order == 1].mean())
    assert random_average_precision(10, 4) == pytest.approx(np.mean(simulated), abs=3e-3)
    assert random_average_precision(3, 3) == 1.0
    with pytest.raises(ValueError):
        random_average_precision(3, 0)


def test_random_v_measure_is_far_above_zero_for_small_clusters():
    small = random_v_measure([k for k in range(11) for _ in range(4)], partitions=50)
    large = random_v_measure([k for k in range(2) for _ in range(200)], partitions=50)
    assert 0.3 < small < 0.7 and large < 0.05


def test_chance_levels_of_the_offline_tasks_follow_their_sizes():
    retrieval, reranking = RTReviewPlotRetrieval(), RTReviewPlotReranking()
    assert chance_level(retrieval) == pytest.approx(random_ndcg_at_10(100))
    assert 100 * chance_level(reranking) == pytest.approx(45.67, abs=0.01)
    overview = task_overview()
    assert list(overview.index) == [cls.metadata.name for cls in OFFLINE_TASKS]
    chance = overview["chance"]
    assert chance["RTSentimentClassification"] == 50 and chance["LeeSTS"] == 0
    assert 50 < chance["RTSameMoviePairClassification"] < 53
    assert "429 queries; 100 documents" in overview.loc["RTReviewPlotRetrieval", "size"]


def report(scores: dict[str, float], half: float | None = None, types=None) -> dict:
    """A report whose tasks have ``scores`` (0..1) and intervals of half-width ``half``."""
    types = types or {name: name for name in scores}
    tasks = [{"task": n, "type": types[n], "score": s} for n, s in scores.items()]
    intervals = {}
    if half is not None:
        intervals = {n: {"recomputed": s, "ci95": [s - half, s + half]} for n, s in scores.items()}
    return {"tasks": tasks, "intervals": intervals}


TYPES = {"RTA": "Retrieval", "STSA": "STS"}


def test_noise_adds_queries_and_draws():
    one = report({"RTA": 0.10, "STSA": 0.50}, half=0.02, types=TYPES)
    assert query_noise(one) == pytest.approx(math.sqrt(2 * 2.0**2) / 2)
    assert query_noise(one, "Retr") == pytest.approx(2.0)
    assert estimate([one]) == Estimate(30.0, pytest.approx(math.sqrt(2)))
    single = estimate([one], draw_std=1.0)
    assert single.noise == pytest.approx(math.hypot(math.sqrt(2), 1.96))
    draws = [report({"RTA": 0.10 + d, "STSA": 0.50}, types=TYPES) for d in (0.0, 0.02, 0.04)]
    several = estimate(draws)
    assert several.value == pytest.approx(31.0)
    assert several.noise == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-3)  # t(0.975, 2)
    with pytest.raises(ValueError):
        query_noise(one, "Mean (TaskType)")


def test_the_decision_rule_has_four_outcomes():
    assert Difference(0.5, 1.0).verdict == "no measured difference"  # a band of 1 point rules
    assert Difference(0.5, 2.0).verdict == "too noisy to tell"  # out what matters; 2 cannot
    assert Difference.fraction(0.005, 0.02).verdict == "too noisy to tell"  # 0-1 scale
    assert Difference.fraction(0.005, 0.008).verdict == "no measured difference"
    assert Difference(0.5, math.nan).verdict == "too noisy to tell"
    assert Difference(-1.5, 1.0).verdict == "lower"
    change = difference(Estimate(12.0, 0.3), Estimate(10.0, 0.4))
    assert change.value == pytest.approx(2.0) and change.noise == pytest.approx(0.5)
    assert "a gain beyond the noise" in describe_change("GRACE", change)
    assert "no measured difference" in describe_change("GRACE", Difference(0.2, 0.5))
    assert "too noisy to tell" in describe_change("GRACE", Difference(0.2, 1.5))


def test_paper_comparisons_put_our_change_beside_the_papers():
    rows = {
        "base, direct": [report({"RTA": 0.10, "STSA": 0.50}, 0.01, TYPES)],
        "base + rationale": [report({"RTA": 0.11, "STSA": 0.50}, 0.01, TYPES)] * 2,
        "GRACE supervised": [report({"RTA": 0.30, "STSA": 0.60}, 0.01, TYPES)] * 2,
    }
    table = paper_comparisons(rows)
    assert list(table.index) == [
        "base + rationale vs base, direct",
        "GRACE supervised vs base, direct",
    ]
    assert list(table["ours: verdict"]) == ["too noisy to tell", "higher"]
    assert list(table["paper (Avg as printed)"]) == ["+2.59", "+15.15"]
    sentence = describe_comparisons(table)
    assert "paper reports 2 as gains" in sentence and "cannot tell in 1" in sentence
    assert len(PAPER_COMPARISONS) == 5


def test_chance_margins_name_rows_that_are_not_above_chance():
    chance = [{"task": "RTA", "type": "Retrieval", "score": 0.05},
              {"task": "STSA", "type": "STS", "score": 0.0}]  # fmt: skip
    rows = {"model": [report({"RTA": 0.055, "STSA": 0.40}, 0.02, TYPES)]}
    margins = chance_margins(rows, chance)
    assert margins["model"]["Retr"].verdict == "too noisy to tell"
    assert margins["model"]["STS"].verdict == "higher"
    assert describe_chance(margins) == (
        "Categories above the chance level beyond the noise: model 1 of 2."
    )
    table = chance_table(margins)
    assert table.loc["model", "STS"] == "**+40.00 ± 2.00**"
    assert table.loc["model", "Retr"] == "+0.50 ± 2.00"


def test_means_note_says_why_the_two_means_agree():
    one_each = [{"task": n, "type": t} for n, t in TYPES.items()]
    assert "equals" in means_note(one_each)
    assert "weights each type by" in means_note([*one_each, {"task": "x", "type": "STS"}])


def test_single_draws_leave_out_means_of_draws():
    draws = {"row (draw 1)": {"a": 1}, "row (draw 2)": {"a": 2}, "row (mean of 2)": {"a": 3}}
    row = Reports(main={"label": "row", "a": 3}, draws=draws)
    assert row.single_draws() == [{"a": 1}, {"a": 2}]
    assert Reports(main={"label": "direct row"}).single_draws() == [{"label": "direct row"}]


def test_separation_of_few_pairs_is_no_difference():
    direct = np.array([[1, 0.9, 0.5, 0.4], [0.9, 1, 0.5, 0.5], [0.5, 0.5, 1, 0.8],
                       [0.4, 0.5, 0.8, 1]])  # fmt: skip
    margin, noise = pair_margin(direct, [(0, 1), (2, 3)])
    assert margin == pytest.approx(0.85 - 0.475)
    assert noise > 0
    text = describe_separation(
        {"direct": direct, "with rationale": direct + 0.01}, [(0, 1), (2, 3)]
    )
    assert "too noisy to tell with 2 related pairs; 4 sentences" in text
    assert math.isnan(pair_margin(direct, [(0, 1)])[1])
    # With two related pairs the band uses t with 1 degree of freedom (12.7), not 1.96.
    close, other = np.array([0.9, 0.8]), np.array([0.5, 0.5, 0.4, 0.5])
    error = math.sqrt(close.var(ddof=1) / 2 + other.var(ddof=1) / 4)
    assert noise == pytest.approx(12.706 * error, rel=1e-3)
    apart = np.eye(4) + 0.001 * np.ones((4, 4))
    apart[0, 1] = apart[1, 0] = apart[2, 3] = apart[3, 2] = 0.9
    wider = describe_separation({"direct": apart, "with rationale": apart * 2}, [(0, 1), (2, 3)])
    assert "With rationale against direct: +0.90 ± 0.00, a wider margin beyond the noise" in wider


def test_rollouts_count_cap_hits_and_think_tags():
    table = pd.DataFrame({
        "temperature": [0.0, 0.0, 1.0, 1.0],
        "tokens": [8, 4, 8, 8],
        "hit_cap": [True, False, True, True],
        "rationale": ["<think>a</think>", "b", "c", "d"],
    })  # fmt: skip
    text = describe_rollouts(table, cap=8, train_temperature=1.0)
    assert text.startswith("Temperature 0: 2 rationales of 6.0 tokens")
    assert "1 of 2 stopped by the cap of 8" in text
    assert "(1) 100% of the rollouts hit this cap of 8 tokens" in text
    assert "1 of 4 rationales open a `<think>` tag" in text


def test_pooling_verdicts():
    unit = np.eye(3)[:2]
    rotated = np.array([[0.6, 0.8, 0.0], [0.0, 0.8, 0.6]])
    assert "same embedding up to float rounding" in describe_pooling(unit, unit, unit, rotated)
    assert "do NOT agree" in describe_pooling(unit, rotated, unit, rotated)


def test_cancellation_verdicts():
    terms = {"positive": np.array([[0.1, 0.3]]), "negative": np.array([[0.2, 0.2]])}
    full = np.array([[-1.0, 1.0]])
    assert "steer nothing" in describe_cancellation(terms, full, full + 1e-8)
    assert "Constant within every group: negative" in describe_cancellation(terms, full, full)
    assert "DOES steer" in describe_cancellation(terms, full, full + 0.1)
    flat = {"positive": np.zeros((2, 3)), "negative": np.ones((2, 3))}
    assert "every advantage is zero" in describe_cancellation(flat, full, full)
    assert "every advantage is zero" not in describe_cancellation(terms, full, full)


def test_margins_and_paired_change():
    base = np.array([0.01, -0.02, 0.03, 0.00])
    text = describe_margins({"base": base, "GRACE": base + np.array([0.1, 0.11, 0.09, 0.1])})
    assert "positive plot closer in 2 of 4" in text and "a wider margin beyond the noise" in text
    assert "too noisy to tell" in describe_margins({"base": base, "GRACE": base[::-1]})
    assert mean_and_noise(np.array([1.0]))[1] != mean_and_noise(np.array([1.0]))[1]  # NaN


def test_generative_changes_are_paired_by_instruction():
    def result(perplexity, passed):
        return {"perplexity": perplexity, "replies": [{"passed": p} for p in passed]}

    results = {
        "base": result(10.0, [1, 1, 0, 0]),
        "+CL": result(40.0, [0, 0, 0, 0]),
        "GRACE": result(10.5, [1, 1, 0, 0]),
    }
    text = describe_generative(results)
    assert "+CL: perplexity x4.00, instructions passed 0 of 4 (too noisy to tell" in text
    assert "GRACE: perplexity x1.05, instructions passed 2 of 4 (the same instructions" in text


def test_changes_against_a_reference_report():
    reports = {
        "direct": report({"RTA": 0.10, "STSA": 0.50}, 0.01, TYPES),
        "16 tokens": report({"RTA": 0.14, "STSA": 0.52}, 0.01, TYPES),
        "32 tokens": report({"RTA": 0.20, "STSA": 0.60}, 0.01, TYPES),
    }
    table = changes_against(reports, "direct", {"16 tokens": 2.0, "32 tokens": 2.0})
    assert list(table.index) == ["16 tokens", "32 tokens"]
    assert table.loc["16 tokens", "Mean (Task)"] == pytest.approx(33.0)
    assert list(table["verdict"]) == ["too noisy to tell", "higher"]
    assert table.loc["32 tokens", "change"].startswith("+10.00 ± ")
    assert list(changes_against(reports, "direct", 0.0)["verdict"]) == ["higher", "higher"]


def test_length_changes_compare_each_model_with_its_own_direct_point():
    reports = {
        "base, 0": report({"RTA": 0.10}, 0.01, {"RTA": "Retrieval"}),
        "base, 4": report({"RTA": 0.20}, 0.01, {"RTA": "Retrieval"}),
        "GRACE, 0": report({"RTA": 0.30}, 0.01, {"RTA": "Retrieval"}),
        "GRACE, 4": report({"RTA": 0.31}, 0.01, {"RTA": "Retrieval"}),
    }
    table = length_changes(reports, {"base": 1.0, "GRACE": 1.0})
    assert list(table.index) == ["base, 4", "GRACE, 4"]
    assert list(table["verdict"]) == ["higher", "too noisy to tell"]
    assert count_verdicts(table, "direct pooling") == (
        "Against direct pooling: a gain beyond the noise at 1 of 2 points, a loss at 0, "
        "no measured difference at 0, too noisy to tell at 1."
    )


def test_margins_of_one_model_end_as_a_sentence():
    assert describe_margins({"base": np.array([0.1, 0.2, 0.3])}).endswith("closer in 3 of 3.")


def test_describe_step_counts_rollouts_that_follow_their_advantage():
    import pandas as pd

    from grace.book.readings import describe_step

    step = pd.DataFrame({
        "group": [0, 0, 1, 1],
        "advantage": [1.0, -1.0, 0.5, -0.5],
        "change": [0.2, -0.1, -0.05, -0.3],
    })  # fmt: skip
    text = describe_step(step)
    assert text.startswith("3 of 4 rollouts with a non-zero advantage moved the way")
    assert "Group 0: the best rollout (advantage +1.00) changed its log-probability by +0.2" in text
    assert "the worst (-0.50) by -0.300" in text and "share weights" in text
    flat = step.assign(advantage=0.0)
    assert describe_step(flat).startswith("Every advantage is zero")


def test_describe_collapse_names_copying_and_fences_from_the_logged_rollouts(tmp_path):
    import json

    from grace.book.readings import describe_collapse
    from grace.diagnostics import logged_rollout_diagnostics

    text = "A chef opens a restaurant in Paris and fights his rival."
    samples = [
        {"step": 0, "text": text, "rationales": ["A story of food.", "Cooking and rivalry."]},
        {"step": 8, "text": text, "rationales": [text, "```\n```"]},
        {"step": 16, "text": text, "rationales": [text, text.lower()]},
    ]
    path = tmp_path / "rationales.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    rows = logged_rollout_diagnostics(path)
    assert [r["copy_share"] for r in rows] == [0.0, 0.5, 1.0]
    assert [r["fence_share"] for r in rows] == [0.0, 0.5, 0.0]
    text = describe_collapse(rows)
    assert "copies of the input 0% → 100%" in text and "code fences 0% → 0%" in text
    assert "most rollouts are copying the input" in text
    assert "No collapse is visible" in describe_collapse(rows[:1])


def test_describe_loss_reads_first_tenth_and_last_steps():
    from grace.book.readings import describe_loss

    history = [{"step": s, "loss": 2.0 / s} for s in (1, 5, 9, 12, 150)] + [{"step": 150}]
    assert describe_loss(history) == "2.000 at step 1, 0.222 at step 9, 0.013 at step 150."
