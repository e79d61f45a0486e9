import json

from grace.book.study import (
    budget_to_match,
    echo_control,
    study_figure,
    study_markdown,
    study_records,
    study_rows,
    swap_markdown,
    task_run_reading,
)


def record(name: str, method: str, changes: list[float], per_step: int = 4) -> dict:
    steps = [10 * i for i in range(len(changes))]
    diagnostics = [
        {"distinct_2": 0.5 - 0.05 * i, "copy_share": 0.1, "fence_share": 0.0, "mean_cosine": 0.8}
        for i in range(len(changes))
    ]
    return {
        "variant": name,
        "overrides": {"reward.anchors": "frozen"} if method == "grace" else {},
        "settings": {"config": {"run": {"method": method}}},
        "curve": {
            "steps": steps,
            "values": [0.07 + c for c in changes],
            "stderr": [0.01] * len(changes),
            "change": changes,
            "change_stderr": [0.0] + [0.01] * (len(changes) - 1),
            "queries": 268,
            "prompts_seen": [s * per_step for s in steps],
            "seconds": [s * 60.0 for s in steps],
            "diagnostics": diagnostics if method == "grace" else [{} for _ in changes],
        },
    }


def test_the_budget_to_match_is_the_first_point_that_reaches_the_target():
    grace = record("study-frozen", "grace", [0.0, 0.01, 0.05, 0.03])
    assert budget_to_match(grace, 0.04) == {"step": 20, "prompts_seen": 80, "seconds": 1200.0}
    assert budget_to_match(grace, 0.2) is None
    assert budget_to_match(grace, 0.0)["step"] == 10  # never step 0 itself


def test_rows_give_best_and_last_change_and_the_diagnostics_ends():
    rows = study_rows([record("study-frozen", "grace", [0.0, 0.05, 0.02])])
    (row,) = rows
    assert row["variant"] == "frozen" and row["at step"] == 10
    assert row["best change"] == (0.05, 0.01) and row["last change"] == (0.02, 0.01)
    assert row["verdict"] == "too noisy to tell"  # 0.02 is 2 errors; 3 are wider than 0.01
    assert row["distinct-2"] == [0.5, 0.4] and row["prompts"] == 80
    (cl,) = study_rows([record("study-cl", "contrastive", [0.0, 0.1])])
    assert cl["distinct-2"] is None and cl["verdict"] == "higher" and cl["variant"] == "+CL"


def test_markdown_and_figure_from_records_on_disk(tmp_path):
    for entry in (record("study-frozen", "grace", [0.0, 0.01]), record("cl-old", "x", [0.0])):
        (tmp_path / f"{entry['variant']}.json").write_text(json.dumps(entry))
    (tmp_path / "study-old.json").write_text(  # a record without the budget is left out
        json.dumps(record("study-old", "grace", [0.0]) | {"curve": {"steps": [0]}})
    )
    records = study_records(tmp_path)
    assert [r["variant"] for r in records] == ["study-frozen"]
    table = study_markdown(records).splitlines()
    assert len(table) == 3 and "| frozen | reward.anchors=frozen | 268 | 10 | 40 |" in table[2]
    assert "+0.010 ± 0.010" in table[2] and "0.50 → 0.45" in table[2]
    figure = study_figure(records, tmp_path / "study.png")
    assert (tmp_path / "study.png").stat().st_size > 10_000
    assert len(figure.axes) == 4 and len(figure.axes[0].lines) == 2  # the curve and zero


def test_describe_study_gives_each_variant_and_the_budget_to_match_the_baseline():
    from grace.book.study import describe_study

    records = [
        record("study-frozen", "grace", [0.0, 0.01, -0.02]),
        record("study-fast", "grace", [0.0, 0.12, 0.2]),
        record("study-cl", "contrastive", [0.0, 0.1, 0.15], per_step=8),
    ]
    text = describe_study(records).splitlines()
    assert text[0].startswith("- **frozen**: paired change -0.020 ± 0.010 after 80 prompts")
    assert "too noisy to tell; distinct-2 0.50 → 0.40, copies 10% → 10%" in text[0]
    assert text[2].startswith("- **+CL** (the baseline): +0.150 ± 0.010 after 160 pairs")
    assert text[3] == "  - frozen reaches it at no point of its run (80 prompts, 0.3 CPU h)."
    assert text[4] == "  - fast reaches it after 80 prompts, 0.3 CPU h."
    assert describe_study([]) == "No study records yet."


def test_describe_study_survives_a_run_whose_rationales_lost_their_words():
    from grace.book.study import describe_study

    collapsed = record("study-frozen", "grace", [0.0, -0.01])
    collapsed["curve"]["diagnostics"][-1]["distinct_2"] = None  # bare fences: no word pairs
    assert "distinct-2 0.50 → none" in describe_study([collapsed])
    from grace.book.study import study_markdown

    assert "| 0.50 → none |" in study_markdown([collapsed])  # the table keeps the first value


def test_echo_control_sets_the_copy_beside_the_rows_it_explains():
    from grace.evaluation.results import table_row

    def report(retrieval: float, half: float) -> dict:
        scores = {"RTA": retrieval, "STSA": 0.5}
        return {
            "tasks": [
                {"task": "RTA", "type": "Retrieval", "score": retrieval},
                {"task": "STSA", "type": "STS", "score": 0.5},
            ],
            "intervals": {n: {"ci95": [s - half, s + half]} for n, s in scores.items()},
        }

    table = [
        table_row("base, direct", [report(0.03, 0.01)]),
        table_row("base + rationale", [report(0.03, 0.01), report(0.04, 0.01)]),
        table_row("GRACE unsupervised", [report(0.08, 0.02), report(0.08, 0.02)]),
        table_row("+CL", [report(0.23, 0.03)]),
    ]
    validation = {
        "profile": "cpu-long",
        "queries": 268,
        "mrr": {"step 0 (greedy rationale)": [0.066, 0.01], "echo": [0.07, 0.01]},
        "change": [0.004, 0.002],
    }
    text = echo_control(table, report(0.07, 0.02), validation, task="RTA")
    lines = text.splitlines()
    # The task's column and the mean; the four rows in their order, +CL left out.
    assert lines[0] == "| row | RTA | Mean (Task) |"
    assert [line.split(" | ")[0] for line in lines[2:6]] == [
        "| base, direct",
        "| base + rationale",
        "| base, echo",
        "| GRACE unsupervised",
    ]
    trained, copy = "GRACE unsupervised 8.00 [6.0, 10.0]", "base, echo 7.00 [5.0, 9.0]"
    assert f"{trained} against {copy}: overlapping" in text
    assert "against base + rationale 3.50 [2.5, 4.5]: above; against base, direct" in text
    assert "paired change +0.0040 ± 0.0020: no measured difference at three standard errors" in text
    validation["change"] = [0.01, 0.002]
    assert "higher at three" in echo_control(table, report(0.07, 0.02), validation, task="RTA")


def test_task_run_reading_says_the_verdict_budget_diagnostics_and_a_rollout():
    entry = record("task-x", "grace", [0.0, -0.05, -0.10]) | {"median_step_seconds": 18.2}
    entry["curve"]["change_stderr_clustered"] = [0.0, 0.02, 0.03]
    entry["rollouts"] = [{"step": 20, "logged_step": 20, "rollouts": ["Help me help me."]}]
    text = task_run_reading(entry, "GRACE on x")
    assert "change -0.100 ± 0.030" in text and "it got worse" in text  # the clustered error
    assert "80 prompts" in text and "18.2 s a step" in text
    assert "0.50 → 0.40" in text and "`Help me help me.`" in text
    assert "Distinct-2 of its validation rationales" in text
    baseline = record("task-cl", "contrastive", [0.0, 0.1]) | {"median_step_seconds": None}
    baseline["curve"]["diagnostics"] = [{"mean_cosine": 0.8}, {"mean_cosine": 0.6}]
    text = task_run_reading(baseline, "+CL on x")
    assert "it learned" in text and "40 pairs in" in text and "s a step" not in text
    assert "Mean cosine of the embeddings 0.80 → 0.60." in text and "istinct" not in text


def test_swap_markdown_gives_each_cell_its_change_and_verdict():
    def rows(change: float) -> dict:
        return {
            "base writes, base embeds": {
                "mrr": [0.27, 0.02],
                "change": 0.0,
                "change_stderr_clustered": 0.0,
            },
            "trained writes, base embeds": {
                "mrr": [0.27 + change, 0.02],
                "change": change,
                "change_stderr_clustered": 0.01,
            },
        }

    record = {"task": "lee-topic", "queries": 200, "clusters": 40}
    text = swap_markdown(
        {"GRACE": record | {"rows": rows(-0.1)}, "+CL": record | {"rows": rows(0.02)}}
    )
    assert "| cell | GRACE: MRR | change | verdict | +CL: MRR | change | verdict |" in text
    assert (
        "| trained writes, base embeds | 0.170 | -0.100 ± 0.010 | lower "
        "| 0.290 | +0.020 ± 0.010 | too noisy to tell |" in text
    )
    assert "200 queries in 40 clusters" in text
